package issuer

import (
	"context"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

var throttleStart = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// try admits one attempt for key and ends it at once with failed; it returns the wait of a refusal.
func try(t *testing.T, th *throttle, clk *clocktesting.FakeClock, key string, failed bool) time.Duration {
	t.Helper()
	tk, wait := th.admit(context.Background(), key, clk)
	if tk == nil {
		return wait
	}
	if wait != 0 {
		t.Fatalf("got a ticket and a wait %v; want one or the other", wait)
	}
	tk.end(failed, clk.Now())
	return 0
}

func TestThrottleChargesFailuresOnly(t *testing.T) {
	tests := []struct {
		name string
		// attempts, in order: true fails
		attempts []bool
		// refused: the indexes of the attempts that must be refused
		refused []int
	}{
		{"successes never run out", []bool{false, false, false, false, false, false, false, false}, nil},
		{"failures run out after the burst", []bool{true, true, true, true}, []int{2, 3}},
		{"successes between failures take nothing", []bool{true, false, false, false, true, false}, []int{5}},
		{"once failures ran out, a good attempt is refused too", []bool{true, true, false}, []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(throttleStart)
			th := newThrottle(RateLimit{PerSecond: 0.5, Burst: 2}, 10)
			for i, failed := range tt.attempts {
				wait := try(t, th, clk, "alice", failed)
				want := false
				for _, r := range tt.refused {
					want = want || r == i
				}
				if (wait > 0) != want {
					t.Fatalf("attempt %d: got wait %v; want refused %v", i, wait, want)
				}
			}
		})
	}
}

func TestThrottleRefusesUntilAFailureHasRefilled(t *testing.T) {
	clk := clocktesting.NewFakeClock(throttleStart)
	th := newThrottle(RateLimit{PerSecond: 0.5, Burst: 2}, 10)
	try(t, th, clk, "alice", true)
	try(t, th, clk, "alice", true)
	if got := try(t, th, clk, "alice", true); got != 2*time.Second {
		t.Errorf("got wait %v after the burst; want 2s", got)
	}
	clk.Step(time.Second)
	if got := try(t, th, clk, "alice", true); got != time.Second {
		t.Errorf("got wait %v a second later; want 1s", got)
	}
	// A refused attempt takes nothing: after the wait, exactly one more failure goes ahead.
	clk.Step(time.Second)
	if got := try(t, th, clk, "alice", true); got != 0 {
		t.Errorf("got wait %v after waiting; want 0", got)
	}
	if got := try(t, th, clk, "alice", true); got == 0 {
		t.Errorf("got no wait for the second failure after waiting; want one")
	}
	if got := try(t, th, clk, "bob", true); got != 0 {
		t.Errorf("got wait %v for another key; want 0", got)
	}
}

// TestThrottleAdmitsNoMoreAttemptsAtOnceThanFailuresLeft: 50 attempts at once on a key with 3 failures
// left, all of which fail: exactly 3 are admitted, however they interleave; the others wait for those in
// flight, then are refused. Successful attempts at once are all admitted, a burst's worth at a time.
func TestThrottleAdmitsNoMoreAttemptsAtOnceThanFailuresLeft(t *testing.T) {
	for _, failing := range []bool{true, false} {
		name := map[bool]string{true: "every attempt fails", false: "every attempt succeeds"}[failing]
		t.Run(name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(throttleStart)
			th := newThrottle(RateLimit{PerSecond: 1, Burst: 3}, 10)
			const n = 50
			var (
				mu                      sync.Mutex
				admitted, inflight, top int
				wg                      sync.WaitGroup
			)
			start := make(chan struct{})
			for range n {
				wg.Go(func() {
					<-start
					tk, _ := th.admit(context.Background(), "alice", clk)
					if tk == nil {
						return
					}
					mu.Lock()
					admitted++
					inflight++
					top = max(top, inflight)
					mu.Unlock()
					time.Sleep(time.Millisecond) // the work that decides the attempt, long enough to overlap
					mu.Lock()
					inflight--
					mu.Unlock()
					tk.end(failing, clk.Now())
				})
			}
			close(start)
			wg.Wait()
			want := n
			if failing {
				want = 3
			}
			if admitted != want {
				t.Errorf("got %d attempts admitted; want %d", admitted, want)
			}
			if top > 3 {
				t.Errorf("got %d attempts in flight at once; want at most the 3 failures left", top)
			}
			if got := th.tracked(); got != map[bool]int{true: 1, false: 0}[failing] {
				t.Errorf("got %d keys tracked; want a key only while it has failed", got)
			}
		})
	}
}

func TestThrottleWaitEndsWithTheRequest(t *testing.T) {
	clk := clocktesting.NewFakeClock(throttleStart)
	th := newThrottle(RateLimit{PerSecond: 1, Burst: 1}, 10)
	held, _ := th.admit(context.Background(), "alice", clk)
	if held == nil {
		t.Fatal("the first attempt was refused")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan time.Duration)
	go func() {
		tk, wait := th.admit(ctx, "alice", clk)
		if tk != nil {
			t.Error("a second attempt was admitted while the only failure left was in flight")
			tk.end(false, clk.Now())
		}
		done <- wait
	}()
	cancel()
	if wait := <-done; wait <= 0 {
		t.Errorf("got wait %v for an attempt whose request ended; want a Retry-After", wait)
	}
	held.end(false, clk.Now())
	if got := try(t, th, clk, "alice", false); got != 0 {
		t.Errorf("got wait %v after the attempt in flight succeeded; want 0", got)
	}
}

// TestThrottleForgetsFullBuckets: memory is bounded by the keys that failed in the last few seconds, and
// when more are counting than it tracks, new keys are refused rather than the table growing.
func TestThrottleForgetsFullBuckets(t *testing.T) {
	clk := clocktesting.NewFakeClock(throttleStart)
	th := newThrottle(RateLimit{PerSecond: 1, Burst: 2}, 2)
	for _, key := range []string{"a", "b", "c", "d"} {
		try(t, th, clk, key, false)
	}
	if got := th.tracked(); got != 0 {
		t.Fatalf("got %d keys tracked after successes only; want 0", got)
	}
	try(t, th, clk, "a", true)
	try(t, th, clk, "b", true)
	if got := try(t, th, clk, "c", true); got == 0 {
		t.Fatalf("got a third key admitted while two buckets are counting; want it refused")
	}
	if got := th.tracked(); got != 2 {
		t.Fatalf("got %d keys tracked; want 2", got)
	}
	clk.Step(2 * time.Second) // a and b have refilled
	if got := try(t, th, clk, "c", true); got != 0 {
		t.Fatalf("got wait %v for a new key once the others refilled; want 0", got)
	}
	if got := th.tracked(); got != 1 {
		t.Errorf("got %d keys tracked; want only c's", got)
	}
}

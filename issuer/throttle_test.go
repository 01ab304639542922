package issuer

import (
	"testing"
	"time"
)

func TestThrottleRefusesUntilTheBucketRefills(t *testing.T) {
	now := time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)
	th := newThrottle(RateLimit{PerSecond: 0.5, Burst: 2}, 10)
	for i := range 2 {
		if got := th.admit("alice", now); got != 0 {
			t.Fatalf("attempt %d: got wait %v; want 0 within the burst", i, got)
		}
	}
	if got := th.admit("alice", now); got != 2*time.Second {
		t.Errorf("got wait %v after the burst; want 2s", got)
	}
	// A refused attempt takes nothing: after the wait, exactly one more goes ahead.
	if got := th.admit("alice", now.Add(2*time.Second)); got != 0 {
		t.Errorf("got wait %v after waiting; want 0", got)
	}
	if got := th.admit("alice", now.Add(2*time.Second)); got == 0 {
		t.Errorf("got no wait for the second attempt after waiting; want one")
	}
}

// TestThrottleForgetsFullBuckets: memory is bounded by the keys active in the last few seconds, and when
// more are active than it tracks, new keys are refused rather than the table growing.
func TestThrottleForgetsFullBuckets(t *testing.T) {
	now := time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)
	th := newThrottle(RateLimit{PerSecond: 1, Burst: 2}, 2)
	th.admit("a", now)
	th.admit("b", now)
	if got := th.admit("c", now); got == 0 {
		t.Fatalf("got a third key admitted while two buckets are counting; want it refused")
	}
	if got := len(th.buckets); got != 2 {
		t.Fatalf("got %d buckets; want 2", got)
	}
	later := now.Add(2 * time.Second) // a and b have refilled
	if got := th.admit("c", later); got != 0 {
		t.Fatalf("got wait %v for a new key once the others refilled; want 0", got)
	}
	if _, ok := th.buckets["a"]; ok {
		t.Errorf("got bucket a kept after it refilled; want it forgotten")
	}
}

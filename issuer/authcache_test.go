package issuer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// countingAuth accepts every token but "bad" (refused) and "down" (unavailable), and counts its reviews.
type countingAuth struct {
	mu    sync.Mutex
	calls int
	fail  bool
}

func (a *countingAuth) Authenticate(_ context.Context, token, _ string) (ServiceAccount, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	switch {
	case token == "down":
		return ServiceAccount{}, fmt.Errorf("%w: connection refused", ErrAuthenticatorUnavailable)
	case a.fail || token == "bad":
		return ServiceAccount{}, errors.New("not authenticated")
	}
	return ServiceAccount{Namespace: "ns", Name: "sa-" + token, UID: "uid-" + token}, nil
}

func (a *countingAuth) reviews() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

func TestCachingAuthenticatorReusesSuccessesForItsTTLOnly(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	next := &countingAuth{}
	c := &CachingAuthenticator{Next: next, TTL: 10 * time.Second, Clock: clk}
	ctx := context.Background()
	if _, ok := c.Remembered("a", "aud"); ok {
		t.Fatal("got a token remembered before any review")
	}
	for range 3 {
		if sa, err := c.Authenticate(ctx, "a", "aud"); err != nil || sa.Namespace != "ns" || sa.Name != "sa-a" {
			t.Fatalf("got %+v, %v; want ns/sa-a", sa, err)
		}
	}
	if got := next.reviews(); got != 1 {
		t.Fatalf("reviews for three identical requests: got %d; want 1", got)
	}
	if sa, ok := c.Remembered("a", "aud"); !ok || sa.Name != "sa-a" {
		t.Fatalf("Remembered: got %+v, %v; want sa-a", sa, ok)
	}
	if _, err := c.Authenticate(ctx, "a", "other-audience"); err != nil || next.reviews() != 2 {
		t.Fatalf("another audience: %d reviews, %v; want a review of its own", next.reviews(), err)
	}
	clk.Step(10*time.Second + time.Millisecond)
	if _, ok := c.Remembered("a", "aud"); ok {
		t.Fatal("got a success remembered after its TTL")
	}
	if _, err := c.Authenticate(ctx, "a", "aud"); err != nil || next.reviews() != 3 {
		t.Fatalf("after the TTL: %d reviews, %v; want a new review", next.reviews(), err)
	}
	// A token that stops authenticating is refused once its remembered success has expired.
	next.fail = true
	clk.Step(10*time.Second + time.Millisecond)
	if _, err := c.Authenticate(ctx, "a", "aud"); err == nil {
		t.Fatal("a token whose review now fails was accepted after the TTL")
	}
}

func TestCachingAuthenticatorRemembersRefusalsBrieflyAndOutagesNever(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	next := &countingAuth{}
	c := &CachingAuthenticator{Next: next, FailureTTL: 5 * time.Second, Clock: clk}
	ctx := context.Background()
	for range 3 {
		if _, err := c.Authenticate(ctx, "bad", "aud"); err == nil {
			t.Fatal("a refused token was accepted")
		}
	}
	if got := next.reviews(); got != 1 {
		t.Fatalf("reviews of one refused token presented three times: got %d; want 1", got)
	}
	if _, ok := c.Remembered("bad", "aud"); ok {
		t.Fatal("Remembered answers for a refused token; want successes only")
	}
	clk.Step(5*time.Second + time.Millisecond)
	if _, err := c.Authenticate(ctx, "bad", "aud"); err == nil || next.reviews() != 2 {
		t.Fatalf("after the failure TTL: %d reviews, %v; want a new review, refused", next.reviews(), err)
	}
	for range 3 {
		if _, err := c.Authenticate(ctx, "down", "aud"); !errors.Is(err, ErrAuthenticatorUnavailable) {
			t.Fatalf("got %v; want ErrAuthenticatorUnavailable", err)
		}
	}
	if got := next.reviews(); got != 5 {
		t.Fatalf("reviews after three that could not be made: got %d; want 5 (an outage is never remembered)", got)
	}
}

// TestCachingAuthenticatorStaysBoundedAndGarbageEvictsOnlyGarbage: a flood of refused tokens fills the
// failures' cache to its size and no further, and leaves the successes remembered.
func TestCachingAuthenticatorStaysBoundedAndGarbageEvictsOnlyGarbage(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	next := &countingAuth{}
	c := &CachingAuthenticator{Next: next, Clock: clk, MaxSize: 8}
	ctx := context.Background()
	for i := range 3 {
		if _, err := c.Authenticate(ctx, fmt.Sprintf("good-%d", i), "aud"); err != nil {
			t.Fatal(err)
		}
	}
	next.fail = true
	for i := range 1000 {
		if _, err := c.Authenticate(ctx, fmt.Sprintf("garbage-%d", i), "aud"); err == nil {
			t.Fatal("garbage was accepted")
		}
	}
	if successes, failures := c.remembered(); successes != 3 || failures != 8 {
		t.Errorf("got %d successes and %d failures remembered; want 3 and 8 (the size)", successes, failures)
	}
	for i := range 3 {
		if _, ok := c.Remembered(fmt.Sprintf("good-%d", i), "aud"); !ok {
			t.Errorf("good-%d forgotten after a flood of garbage; want it remembered", i)
		}
	}
	next.fail = false
	for i := range 20 {
		if _, err := c.Authenticate(ctx, fmt.Sprintf("more-%d", i), "aud"); err != nil {
			t.Fatal(err)
		}
	}
	if successes, _ := c.remembered(); successes != 8 {
		t.Errorf("got %d successes remembered; want 8 (the size)", successes)
	}
}

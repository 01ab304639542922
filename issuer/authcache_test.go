package issuer

import (
	"context"
	"errors"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

type countingAuth struct {
	calls int
	fail  bool
}

func (a *countingAuth) Authenticate(_ context.Context, token, _ string) (ServiceAccount, error) {
	a.calls++
	if a.fail || token == "bad" {
		return ServiceAccount{}, errors.New("not authenticated")
	}
	return ServiceAccount{Namespace: "ns", Name: "sa-" + token, UID: "uid-" + token}, nil
}

func TestCachingAuthenticatorReusesSuccessesForItsTTLOnly(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	next := &countingAuth{}
	c := &CachingAuthenticator{Next: next, TTL: 10 * time.Second, Clock: clk, MaxSize: 2}
	ctx := context.Background()
	for range 3 {
		if sa, err := c.Authenticate(ctx, "a", "aud"); err != nil || sa.Namespace != "ns" || sa.Name != "sa-a" {
			t.Fatalf("got %+v, %v; want ns/sa-a", sa, err)
		}
	}
	if next.calls != 1 {
		t.Fatalf("reviews for three identical requests: got %d; want 1", next.calls)
	}
	if _, err := c.Authenticate(ctx, "a", "other-audience"); err != nil || next.calls != 2 {
		t.Fatalf("another audience: calls %d, %v; want a review of its own", next.calls, err)
	}
	for range 2 {
		if _, err := c.Authenticate(ctx, "bad", "aud"); err == nil {
			t.Fatal("a failed review was accepted")
		}
	}
	if next.calls != 4 {
		t.Fatalf("after two failures: %d reviews; want 4 (failures are never cached)", next.calls)
	}
	clk.Step(10 * time.Second)
	if _, err := c.Authenticate(ctx, "a", "aud"); err != nil || next.calls != 5 {
		t.Fatalf("after the TTL: %d reviews, %v; want a new review", next.calls, err)
	}
	// A token that stops authenticating is refused once its cached success has expired.
	next.fail = true
	clk.Step(10 * time.Second)
	if _, err := c.Authenticate(ctx, "a", "aud"); err == nil {
		t.Fatal("a token whose review now fails was accepted after the TTL")
	}
	// The cache never grows past MaxSize.
	next.fail = false
	for _, tok := range []string{"x", "y", "z"} {
		if _, err := c.Authenticate(ctx, tok, "aud"); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.entries) > 2 {
		t.Fatalf("cache holds %d entries; want at most 2", len(c.entries))
	}
}

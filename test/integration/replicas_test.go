package integration

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// concurrentRefreshes presents one refresh token n times at once, spread over the replicas.
func (f *fixture) concurrentRefreshes(n int, rt string) []response {
	out := make([]response, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			out[i] = f.refresh(i, rt)
		})
	}
	close(start)
	wg.Wait()
	return out
}

func TestARefreshTokenIsRedeemedOnceAcrossReplicas(t *testing.T) {
	f := newFixture(t, 3, nil)
	login := f.login(0, "alice")
	results := f.concurrentRefreshes(30, login.str("refresh_token"))
	var winner *response
	for i, r := range results {
		switch {
		case r.status == http.StatusOK:
			if winner != nil {
				t.Fatalf("two refreshes of one token succeeded (%d and another): the token was redeemed twice", i)
			}
			winner = &results[i]
		case r.status != http.StatusBadRequest || r.str("error") != "invalid_grant":
			t.Fatalf("refresh %d: %d %s; want 200 once and 400 invalid_grant for the others", i, r.status, r.body)
		}
	}
	if winner == nil {
		t.Fatal("no refresh succeeded; want exactly one")
	}
	// The duplicates were reuse: the session is revoked, so even the winner's successor is refused,
	// and every replica reports the winner's access token inactive.
	for i := range f.replicas {
		if r := f.refresh(i, winner.str("refresh_token")); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
			t.Fatalf("replica %d: refresh with the winner's token after reuse: %d %s; want invalid_grant", i, r.status, r.body)
		}
	}
	f.eventuallyInactive(winner.str("access_token"))
}

func TestDuplicatesInsideTheGracePeriodGetTheSameSuccessor(t *testing.T) {
	f := newFixture(t, 3, func(s *v1alpha1.TokenPolicySpec) {
		s.RefreshToken.ReuseGracePeriod = metav1.Duration{Duration: 30 * time.Second}
	})
	login := f.login(1, "alice")
	results := f.concurrentRefreshes(24, login.str("refresh_token"))
	for i, r := range results {
		if r.status != http.StatusOK {
			t.Fatalf("duplicate %d: %d %s; want 200", i, r.status, r.body)
		}
		if !bytes.Equal(r.body, results[0].body) {
			t.Fatalf("duplicate %d answered\n%s\nand duplicate 0\n%s\nwant the same successor, byte for byte (EdDSA is deterministic)", i, r.body, results[0].body)
		}
	}
	if r := f.refresh(2, results[0].str("refresh_token")); r.status != http.StatusOK {
		t.Fatalf("refresh of the shared successor: %d %s", r.status, r.body)
	}
}

func TestRevocationsAreSeenByEveryReplica(t *testing.T) {
	f := newFixture(t, 3, nil)
	ctx := context.Background()

	// Logout on one replica; the refresh token is refused on the others at once (the record is read
	// under compare-and-swap), and the access token is reported inactive everywhere.
	a := f.login(0, "alice")
	req, _ := http.NewRequest(http.MethodPost, f.replicas[0].base+f.path()+"/logout", bytes.NewReader([]byte(`{"refresh_token":"`+a.str("refresh_token")+`"}`)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	for i := 1; i < 3; i++ {
		if r := f.refresh(i, a.str("refresh_token")); r.str("error") != "invalid_grant" {
			t.Fatalf("replica %d: refresh after logout: %d %s; want invalid_grant", i, r.status, r.body)
		}
	}
	f.eventuallyInactive(a.str("access_token"))

	// RFC 7009 revocation with an access token ends its session too.
	b := f.login(1, "alice")
	if r := post(t, f.replicas[1].base+f.path()+"/revoke", url.Values{"token": {b.str("access_token")}}, nil); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := f.refresh(2, b.str("refresh_token")); r.str("error") != "invalid_grant" {
		t.Fatalf("refresh after revoking the access token: %d %s; want invalid_grant", r.status, r.body)
	}

	// A subject-wide revocation, declared as a TokenRevocation: bob's sessions end on every replica,
	// alice's do not.
	bob1, bob2 := f.login(0, "bob"), f.login(2, "bob")
	alice := f.login(1, "alice")
	f.clock.Step(2 * time.Second) // the revocation covers logins before it; let its time pass theirs
	tr := &v1alpha1.TokenRevocation{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "offboard-bob"},
		Spec: v1alpha1.TokenRevocationSpec{PolicyName: f.policy, Subject: "bob", Reason: "left the company"}}
	must(t, env.Client.Create(ctx, tr))
	f.eventuallyInactive(bob1.str("access_token"))
	f.eventuallyInactive(bob2.str("access_token"))
	for i := range f.replicas {
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			r := f.refresh(i, bob1.str("refresh_token"))
			return r.str("error") == "invalid_grant", string(r.body)
		})
	}
	if r := f.refresh(0, alice.str("refresh_token")); r.status != http.StatusOK {
		t.Fatalf("alice's refresh after bob's revocation: %d %s; want 200", r.status, r.body)
	}
}

func TestIdleTimeoutAndAbsoluteExpiryHoldOnEveryReplica(t *testing.T) {
	f := newFixture(t, 3, func(s *v1alpha1.TokenPolicySpec) {
		s.AccessToken.Lifetime = metav1.Duration{Duration: time.Minute}
		s.RefreshToken.Lifetime = metav1.Duration{Duration: 10 * time.Minute}
		s.RefreshToken.IdleTimeout = &metav1.Duration{Duration: 3 * time.Minute}
		s.Signing.RotationInterval = &metav1.Duration{} // no rotation during the simulated hours
	})
	idle := f.login(0, "alice")
	f.clock.Step(4 * time.Minute)
	if r := f.refresh(1, idle.str("refresh_token")); r.str("error") != "invalid_grant" {
		t.Fatalf("refresh 4 minutes after login with a 3-minute idle timeout: %d %s; want invalid_grant", r.status, r.body)
	}

	rt := f.login(0, "alice").str("refresh_token")
	for i := 1; i <= 4; i++ { // every 2 minutes: never idle, until the 10-minute session ends
		f.clock.Step(2 * time.Minute)
		r := f.refresh(i, rt)
		if r.status != http.StatusOK {
			t.Fatalf("refresh %d at %d minutes: %d %s; want 200", i, 2*i, r.status, r.body)
		}
		rt = r.str("refresh_token")
	}
	f.clock.Step(2*time.Minute + 10*time.Second) // past the session's end and the verification leeway
	if r := f.refresh(2, rt); r.str("error") != "invalid_grant" {
		t.Fatalf("refresh after the absolute expiry: %d %s; want invalid_grant", r.status, r.body)
	}
}

func TestARestartedIssuerLosesNothingItAcknowledged(t *testing.T) {
	f := newFixture(t, 1, nil)
	rotated := f.login(0, "alice")
	next := f.refresh(0, rotated.str("refresh_token"))
	if next.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", next.status, next.body)
	}
	revoked := f.login(0, "bob")
	if r := post(t, f.replicas[0].base+f.path()+"/revoke", url.Values{"token": {revoked.str("refresh_token")}}, nil); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}

	f.replicas[0].stop()
	f.replicas[0] = startReplica(t, f.clock, false)
	f.waitServed(f.replicas[0])

	if r := f.refresh(0, revoked.str("refresh_token")); r.str("error") != "invalid_grant" {
		t.Fatalf("after restart, the revoked session refreshed: %d %s", r.status, r.body)
	}
	current := f.refresh(0, next.str("refresh_token"))
	if current.status != http.StatusOK {
		t.Fatalf("after restart, the current refresh token: %d %s; want 200", current.status, current.body)
	}
	if r := f.refresh(0, rotated.str("refresh_token")); r.str("error") != "invalid_grant" {
		t.Fatalf("after restart, the rotated-away generation 0 was accepted: %d %s", r.status, r.body)
	}
}

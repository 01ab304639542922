package reliability

import (
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// TestClockSkewBetweenReplicas runs two replicas whose clocks differ by 4 seconds, under the verification
// leeway (token.DefaultLeeway, 5s): a token minted by either is accepted by the other at once (its iat is
// in the other's future) and until its very end (its exp is in the other's past), and grace duplicates
// across them get the same successor. The tokens of a third replica 8 seconds ahead, beyond the leeway, are
// refused by the replica 8 seconds behind: the leeway is what makes the first two work, and bounds the skew
// the product tolerates.
func TestClockSkewBetweenReplicas(t *testing.T) {
	const skew = 4 * time.Second
	if skew >= token.DefaultLeeway {
		t.Fatalf("the skew under test must be within the leeway %s", token.DefaultLeeway)
	}
	f := newFixture(t, fixtureOptions{spec: func(s *v1alpha1.TokenPolicySpec) {
		s.AccessToken.Lifetime = metav1.Duration{Duration: time.Minute}
		s.RefreshToken.Lifetime = metav1.Duration{Duration: 10 * time.Minute}
		s.Signing.RotationInterval = &metav1.Duration{}
	}})
	behind := f.clock
	ahead := clocktesting.NewFakeClock(behind.Now().Add(skew))
	f.addReplica(replicaOptions{clock: behind}) // replica 0
	f.addReplica(replicaOptions{clock: ahead})  // replica 1
	step := func(d time.Duration) { behind.Step(d); ahead.Step(d) }

	// Minted ahead, used behind at once: iat is 4s in replica 0's future.
	a := f.login(1, "alice")
	r := f.refresh(0, a.str("refresh_token"))
	if r.status != http.StatusOK {
		t.Fatalf("refresh on the replica behind of a token minted ahead: %v; want 200", r)
	}
	if r, _ := f.tryIntrospect(0, a.str("access_token")); r.json["active"] != true {
		t.Fatalf("introspection behind of an access token minted ahead: %v; want active", r)
	}
	// Minted behind, used ahead.
	r2 := f.refresh(1, r.str("refresh_token"))
	if r2.status != http.StatusOK {
		t.Fatalf("refresh ahead of a token minted behind: %v; want 200", r2)
	}

	// Grace duplicates across the two clocks get the same successor.
	dup0, dup1 := f.refresh(0, r2.str("refresh_token")), f.refresh(1, r2.str("refresh_token"))
	if dup0.status != http.StatusOK || dup1.str("refresh_token") != dup0.str("refresh_token") {
		t.Fatalf("grace duplicates across skewed replicas: %v and %v; want the same successor", dup0, dup1)
	}

	// At the end of an access token minted behind: 2s before its exp behind, 2s past it ahead (within
	// the leeway), it is active on both.
	b := f.login(0, "bob")
	step(time.Minute - 2*time.Second)
	for i := range 2 {
		if r, err := f.tryIntrospect(i, b.str("access_token")); err != nil || r.json["active"] != true {
			t.Errorf("replica %d: introspection of an access token at the edge of its lifetime: %v %v; want active", i, r, err)
		}
	}
	// Logout on one replica of a token minted on the other; revocation the other way round.
	if r, err := f.tryLogout(1, b.str("refresh_token")); err != nil || r.status != http.StatusOK {
		t.Errorf("logout ahead of a session started behind: %v %v", r, err)
	}
	c := f.login(1, "carol")
	if r, err := f.tryRevoke(0, c.str("access_token"), "access_token"); err != nil || r.status != http.StatusOK {
		t.Errorf("revocation behind of a token minted ahead: %v %v", r, err)
	}
	if r := f.refresh(0, c.str("refresh_token")); !r.errorIs(http.StatusBadRequest, "invalid_grant") {
		t.Errorf("refresh after the revocation: %v; want invalid_grant", r)
	}

	// Beyond the leeway: a replica 8s ahead of replica 0 (4s ahead of replica 1) mints tokens replica 0
	// refuses as not yet valid and replica 1 accepts.
	f.addReplica(replicaOptions{clock: clocktesting.NewFakeClock(behind.Now().Add(8 * time.Second))})
	d := f.login(2, "alice")
	if r := f.refresh(0, d.str("refresh_token")); !r.errorIs(http.StatusBadRequest, "invalid_grant") {
		t.Errorf("a token minted 8s ahead, beyond the leeway, refreshed behind: %v; want invalid_grant", r)
	}
	if r := f.refresh(1, d.str("refresh_token")); r.status != http.StatusOK {
		t.Errorf("a token minted 4s ahead refreshed: %v; want 200 with the leeway of %s", r, token.DefaultLeeway)
	}
}

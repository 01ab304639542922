package reliability

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// TestKeyRotationUnderLoad drives the controller's clock and the replicas' (one fake clock) through 15
// minutes of a policy that rotates every 3 minutes (access tokens 1m, sessions 10m): five rotations, each
// key Next, then Active, then Retired, then removed. At every 20-second step, after the controller's pass
// has reached the replicas, sessions log in, refresh on alternating replicas and are introspected on every
// replica, and no valid token is refused. Every key but the first is in the JWKS a resource server can
// fetch at least one access-token lifetime before it signs. A resource server that froze the JWKS it fetched before the
// first rotation keeps verifying the first key's tokens until they expire (and, frozen, cannot verify the
// next key's); every token verifies against the first JWKS fetched after its key was published, which
// always came before the key signed.
func TestKeyRotationUnderLoad(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	t0 := clk.Now()
	f := newFixture(t, fixtureOptions{replicas: 2, manual: true, manualClock: clk, spec: func(s *v1alpha1.TokenPolicySpec) {
		s.AccessToken.Lifetime = metav1.Duration{Duration: time.Minute}
		s.RefreshToken.Lifetime = metav1.Duration{Duration: 10 * time.Minute}
		s.Signing.RotationInterval = &metav1.Duration{Duration: 3 * time.Minute}
	}})
	before := f.fetchJWKS(0)
	firstKey := f.getPolicy().Status.ActiveKeyID
	if !before.has(firstKey) || len(before.kids) != 1 {
		t.Fatalf("JWKS before any rotation lists %v; want only the active key %s", before.kids, firstKey)
	}
	published := map[string]jwks{}        // kid -> the first JWKS a resource server fetched that listed it
	publishedAt := map[string]time.Time{} // kid -> when
	for _, k := range before.kids {
		published[k] = before
	}

	type live struct{ rt, at string }
	var sessions []*live
	var oldKeyTokens []string // access tokens signed by the first key
	states := map[string][]v1alpha1.KeyState{}
	removed := map[string]bool{}
	var refreshes, introspections, frozenChecks int
	var idle response
	idleChecked := false

	// checkMinted checks a token just minted: its key was published before it signed.
	checkMinted := func(where, tok string) {
		k := kid(tok)
		pub, ok := published[k]
		if !ok {
			t.Fatalf("%s: a token signed by key %s, which no JWKS fetched before listed", where, k)
		}
		if seen := publishedAt[k]; k != firstKey && clk.Now().Sub(seen) < time.Minute {
			t.Fatalf("%s: key %s signs at +%s, but resource servers could first fetch it at +%s: less than one access lifetime before",
				where, k, clk.Now().Sub(t0), seen.Sub(t0))
		}
		if err := f.verify(pub, tok, clk.Now()); err != nil {
			t.Fatalf("%s: token of key %s does not verify against the JWKS fetched after the key was published: %v", where, k, err)
		}
		if _, isRefresh := claims(tok)["gen"]; k == firstKey && !isRefresh {
			oldKeyTokens = append(oldKeyTokens, tok)
		} else if k != firstKey && f.verify(before, tok, clk.Now()) == nil {
			t.Fatalf("%s: a token of key %s verified against a JWKS that does not list it", where, k)
		}
	}

	const step = 20 * time.Second
	for n := 0; clk.Now().Sub(t0) <= 15*time.Minute; n++ {
		clk.Step(step)
		now := clk.Now()
		f.reconcile()
		p := f.getPolicy()
		var want []string
		for _, k := range p.Status.Keys {
			want = append(want, k.KeyID)
			if s := states[k.KeyID]; len(s) == 0 || s[len(s)-1] != k.State {
				states[k.KeyID] = append(s, k.State)
			}
		}
		for k := range states {
			if !slices.Contains(want, k) {
				removed[k] = true
			}
		}
		slices.Sort(want)
		// The controller's pass reaches the replicas (their informers) before the next step: this is the
		// premise of staged rotation, that a key published one access lifetime ahead is everywhere by then.
		for i := range f.count() {
			testenv.Eventually(t, 30*time.Second, func() (bool, string) {
				got := f.fetchJWKS(i)
				kids := slices.Sorted(slices.Values(got.kids))
				return slices.Equal(kids, want), fmt.Sprintf("replica %d serves %v; the controller published %v", i, kids, want)
			})
		}
		fetched := f.fetchJWKS(n)
		for _, k := range fetched.kids {
			if _, ok := published[k]; !ok {
				published[k], publishedAt[k] = fetched, now
			}
		}

		// Load: a login per step, a refresh of every live session, introspection of every live access token
		// on every replica, offline verification against the JWKS fetched now.
		login := f.login(n, "alice")
		checkMinted("login", login.str("access_token"))
		sessions = append(sessions, &live{rt: login.str("refresh_token"), at: login.str("access_token")})
		if len(sessions) > 5 {
			sessions = sessions[1:]
		}
		switch now.Sub(t0) {
		case 160 * time.Second: // signed by the first key, 20s before it retires; refreshed once, 9 minutes later
			idle = f.login(n, "bob")
			checkMinted("login", idle.str("access_token"))
		case 700 * time.Second:
			if k := kid(idle.str("refresh_token")); k != firstKey {
				t.Fatalf("the idle session's refresh token is signed by %s; want the first key %s", k, firstKey)
			}
			if r := f.refresh(n, idle.str("refresh_token")); r.status != http.StatusOK {
				t.Fatalf("at +%s: a refresh token of the retired first key, in a live session: %v; want 200", now.Sub(t0), r)
			}
			idleChecked = true
		}
		for j, s := range sessions {
			r := f.refresh(n+j, s.rt)
			if r.status != http.StatusOK {
				t.Fatalf("at +%s (keys %v): refresh of a live session on replica %d: %v", now.Sub(t0), p.Status.Keys, (n+j)%2, r)
			}
			refreshes++
			s.rt, s.at = r.str("refresh_token"), r.str("access_token")
			checkMinted("refresh", s.at)
			checkMinted("refresh", s.rt) // a refresh token's key must be published too, or no replica could verify it
			for i := range f.count() {
				r, err := f.tryIntrospect(i, s.at)
				if err != nil || r.status != http.StatusOK || r.json["active"] != true {
					t.Fatalf("at +%s: introspection of a live access token on replica %d: %v %v", now.Sub(t0), i, r, err)
				}
				introspections++
			}
			if err := f.verify(fetched, s.at, now); err != nil {
				t.Fatalf("at +%s: a live access token does not verify against the JWKS fetched now: %v", now.Sub(t0), err)
			}
		}
		// The resource server that froze its JWKS before the rotation: the first key's tokens verify until
		// they expire.
		oldKeyTokens = slices.DeleteFunc(oldKeyTokens, func(tok string) bool {
			exp, _ := claims(tok)["exp"].(float64)
			return !now.Before(time.Unix(int64(exp), 0))
		})
		for _, tok := range oldKeyTokens {
			if err := f.verify(before, tok, now); err != nil {
				t.Fatalf("at +%s: a token of the first key, still valid, does not verify against the JWKS fetched before the rotation: %v", now.Sub(t0), err)
			}
			frozenChecks++
		}
	}

	if !idleChecked {
		t.Errorf("the refresh token of the retired first key was never presented")
	}
	// The first key went through its whole life; later ones at least to Active and Retired.
	if got := states[firstKey]; !slices.Equal(got, []v1alpha1.KeyState{v1alpha1.KeyActive, v1alpha1.KeyRetired}) || !removed[firstKey] {
		t.Errorf("first key %s went through %v, removed %v; want Active, Retired, then removed", firstKey, got, removed[firstKey])
	}
	full := 0
	for k, s := range states {
		if k != firstKey && len(s) >= 3 && s[0] == v1alpha1.KeyNext && s[1] == v1alpha1.KeyActive && s[2] == v1alpha1.KeyRetired {
			full++
		}
	}
	if full < 3 {
		t.Errorf("keys and their states: %v; want at least three keys through Next, Active and Retired", states)
	}
	t.Logf("15 simulated minutes: %d keys (%d removed), %d refreshes, %d introspections, %d verifications with the frozen JWKS; none refused",
		len(states), len(removed), refreshes, introspections, frozenChecks)
}

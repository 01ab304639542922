package reliability

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// TestAPIServerRestartMidLoad stops kube-apiserver under load and starts it again on the same port with
// the same certificates (etcd keeps running). While it is down: refresh, logout and revocation answer 503
// temporarily_unavailable and never a token; access tokens issued before keep verifying offline against
// the JWKS fetched before; the issuer still serves that JWKS from its cache. After the restart the same
// replicas recover by themselves, and every acknowledged operation is still in force.
func TestAPIServerRestartMidLoad(t *testing.T) {
	apiserver := env.Environment().ControlPlane.APIServer
	outage(t, "API server", apiserver.Stop, apiserver.Start)
}

// TestEtcdRestartMidLoad stops etcd under load and starts it again with its data folder kept; the API
// server stays up and reconnects. The same guarantees as for the API server hold.
func TestEtcdRestartMidLoad(t *testing.T) {
	etcd := env.Environment().ControlPlane.Etcd
	outage(t, "etcd", etcd.Stop, etcd.Start)
}

func outage(t *testing.T, what string, stop, start func() error) {
	began := time.Now()
	// A short write timeout: with etcd down the API server holds a write until its own timeout.
	f := newFixture(t, fixtureOptions{replicas: 2, replica: replicaOptions{writeTimeout: time.Second}})
	before := f.fetchJWKS(0)
	issued := f.login(1, "carol")
	l := newLoad(t, f)
	halt := make(chan struct{})
	wait := l.run(loadConfig{workers: 4, sessions: 3, maxOps: 5000, pace: 5 * time.Millisecond, duplicates: true}, halt)
	stopped := false
	defer func() {
		if stopped { // the test failed with the control plane down: bring it back for the other tests
			l.markUp()
			if err := start(); err != nil {
				t.Errorf("start %s again: %v", what, err)
			}
		}
		close(halt)
		wait()
	}()
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		n := l.acked(opRefresh) + l.acked(opLogout) + l.acked(opRevoke)
		return n >= 25, fmt.Sprintf("%d state-changing operations acknowledged before the fault: %s", n, l.table("so far", summary{}, 0))
	})

	t.Logf("stopping %s after %s", what, time.Since(began).Round(time.Millisecond))
	if err := stop(); err != nil {
		t.Fatalf("stop %s: %v", what, err)
	}
	stopped = true
	l.markDown()
	l.fault("%s stopped", what)
	t.Logf("%s stopped after %s", what, time.Since(began).Round(time.Millisecond))

	for i := range f.count() {
		fresh := f.login(i, "bob") // a login writes nothing: it works from the replica's caches
		r := f.refresh(i, fresh.str("refresh_token"))
		if !r.errorIs(http.StatusServiceUnavailable, "temporarily_unavailable") || r.str("access_token") != "" || r.header.Get("Retry-After") == "" {
			t.Errorf("replica %d: refresh with %s down: %v; want 503 temporarily_unavailable with Retry-After and no token", i, what, r)
		}
		if r, err := f.tryLogout(i, fresh.str("refresh_token")); err != nil || !r.errorIs(http.StatusServiceUnavailable, "temporarily_unavailable") {
			t.Errorf("replica %d: logout with %s down: %v %v; want 503 temporarily_unavailable", i, what, r, err)
		}
		// Resource servers verify offline: the JWKS fetched before the fault still verifies tokens issued
		// before it, and the replica still serves the same JWKS from its cache.
		for _, tok := range []string{issued.str("access_token"), fresh.str("access_token")} {
			if err := f.verify(before, tok, f.clock.Now()); err != nil {
				t.Errorf("replica %d: offline verification with the JWKS fetched before the fault: %v", i, err)
			}
		}
		if now := f.fetchJWKS(i); fmt.Sprint(now.kids) != fmt.Sprint(before.kids) {
			t.Errorf("replica %d: JWKS with %s down lists %v; want %v", i, what, now.kids, before.kids)
		}
	}
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		n := l.undecidedCount(opRefresh)
		return n >= 6, fmt.Sprintf("%d refreshes under load answered 503 so far", n)
	})

	l.markUp()
	if err := start(); err != nil {
		t.Fatalf("start %s again: %v", what, err)
	}
	stopped = false
	l.fault("%s started again", what)
	t.Logf("%s started again after %s", what, time.Since(began).Round(time.Millisecond))

	// The same replicas recover by themselves: refresh works again on each, and a logout on one is seen
	// by the other's informer (introspection).
	for i := range f.count() {
		fresh := f.login(i, "bob")
		testenv.Eventually(t, 90*time.Second, func() (bool, string) {
			r, err := f.tryRefresh(i, fresh.str("refresh_token"))
			if err != nil {
				return false, err.Error()
			}
			return r.status == http.StatusOK, fmt.Sprintf("replica %d: refresh after the restart: %v", i, r)
		})
	}
	t.Logf("every replica refreshes again after %s", time.Since(began).Round(time.Millisecond))
	gone := f.login(0, "alice")
	if r, err := f.tryLogout(0, gone.str("refresh_token")); err != nil || r.status != http.StatusOK {
		t.Fatalf("logout after the restart: %v %v", r, err)
	}
	f.eventuallyInactive(gone.str("access_token"))

	close(halt)
	wait()
	halt = make(chan struct{}) // for the deferred close
	wait = func() {}
	sum := l.verify()
	t.Log(l.table(what+" restart under load", sum, time.Since(began)))
	if len(sum.lost) > 0 || len(l.violations) > 0 {
		t.Fatalf("%d acknowledged operations lost, %d invariant violations", len(sum.lost), len(l.violations))
	}
}

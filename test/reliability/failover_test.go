package reliability

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
	"github.com/tokenwarden/tokenwarden/issuer/peer"
)

// journalOwner is the holder of the fixture policy's journal Lease ("" when none).
func (f *fixture) journalOwner(t testing.TB) string {
	l := &coordinationv1.Lease{}
	name := peer.JournalLeaseName(configmap.For(f.getPolicy(), issuerNS).JournalName())
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: issuerNS, Name: name}, l); err != nil {
		return ""
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// TestTheOwnerOfABusyJournalKilledLosesNothing runs three issuer processes, drives them with load spread
// over all three, and SIGKILLs the one holding the journal's Lease: it releases nothing. The others answer
// 503 for the journal until its Lease lapses and one of them takes it; every acknowledged operation holds,
// no token is redeemed twice (the ledger's invariants), and the 503 window is reported.
func TestTheOwnerOfABusyJournalKilledLosesNothing(t *testing.T) {
	bin, err := buildIssuer()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	f := newFixture(t, fixtureOptions{replicas: 0, replica: replicaOptions{clock: clock.RealClock{}}})
	kc := kubeconfig(t)
	for range 3 {
		r := f.startBinary(t, bin, kc, nil)
		f.mu.Lock()
		f.replicas = append(f.replicas, r)
		f.mu.Unlock()
	}

	l := newLoad(t, f)
	halt := make(chan struct{})
	wait := l.run(loadConfig{workers: 6, sessions: 3, maxOps: 8000, pace: 2 * time.Millisecond, duplicates: true}, halt)
	defer func() { close(halt); wait() }()
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		n := l.acked(opRefresh) + l.acked(opDuplicate)
		return n >= 60, fmt.Sprintf("%d refreshes acknowledged", n)
	})
	owner, killed := f.journalOwner(t), -1
	for i := range 3 {
		if f.replica(i).peer == owner {
			killed = i
		}
	}
	if killed < 0 {
		t.Fatalf("the journal's owner %q is none of the three processes", owner)
	}
	// A probe session on a replica that lives, refreshed every 20ms from the kill on: the 503 window is
	// from the kill to its first refresh answered 200.
	survivor := (killed + 1) % 3
	rt := f.login(survivor, "alice").str("refresh_token")
	f.replica(killed).stop()
	killedAt := time.Now()
	l.fault("journal owner SIGKILLed under load")
	var window time.Duration
	unavailable := 0
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		r, err := f.tryRefresh(survivor, rt)
		switch {
		case err != nil:
			return false, err.Error()
		case r.status == http.StatusOK:
			window, rt = time.Since(killedAt), r.str("refresh_token")
			return true, ""
		case r.errorIs(http.StatusServiceUnavailable, "temporarily_unavailable"):
			unavailable++
			return false, r.String()
		}
		t.Fatalf("probe refresh after the kill: %s; want 503 temporarily_unavailable until the journal has an owner, then 200", r)
		return false, ""
	})
	newOwner := f.journalOwner(t)
	t.Logf("journal owner %s killed; probe refreshes answered 503 %d times over %s (lease duration %s); new owner %s",
		owner, unavailable, window.Round(time.Millisecond), leaseDuration, newOwner)
	if newOwner == owner {
		t.Fatalf("the journal is still held by the killed process %s", owner)
	}
	// The bound by design: the lapse of the dead owner's Lease (one duration from its last renewal), the
	// new owner's next pass (a fifth of it), and one probe's round; generous for a loaded test machine.
	if bound := 3*leaseDuration + 5*time.Second; window > bound {
		t.Errorf("503 window %s; want it bounded by the lease duration (at most %s here)", window, bound)
	}

	// A new process takes the dead one's place; load goes on over all three.
	f.replace(killed, f.startBinary(t, bin, kc, nil))
	l.fault("a new process in its place")
	n := l.acked(opRefresh)
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		return l.acked(opRefresh) >= n+30, "refreshes after the failover"
	})
	close(halt)
	wait()
	halt, wait = make(chan struct{}), func() {}

	sum := l.verify()
	t.Log(l.table("journal owner SIGKILLed under load", sum, time.Since(began)))
	if len(sum.lost) > 0 || len(l.violations) > 0 {
		t.Fatalf("%d acknowledged operations lost, %d invariant violations", len(sum.lost), len(l.violations))
	}
}

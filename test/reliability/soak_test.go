package reliability

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// TestSoak runs mixed load (logins, refreshes, duplicate refreshes, introspections, logouts, revocations)
// over three replicas for TOKENWARDEN_SOAK_DURATION (default 40s) while faults are injected on a
// schedule: a conflict burst, a replica restart, and an API server restart. Then it verifies every
// acknowledged operation and prints the figures.
func TestSoak(t *testing.T) {
	duration := 40 * time.Second
	if s := os.Getenv("TOKENWARDEN_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("TOKENWARDEN_SOAK_DURATION: %v", err)
		}
		duration = d
	}
	began := time.Now()
	f := newFixture(t, fixtureOptions{replicas: 3, replica: replicaOptions{writeTimeout: 2 * time.Second}})
	l := newLoad(t, f)
	halt := make(chan struct{})
	wait := l.run(loadConfig{workers: 6, sessions: 4, maxOps: 100000, pace: 10 * time.Millisecond, duplicates: true}, halt)
	stopped := false
	apiserver := env.Environment().ControlPlane.APIServer
	defer func() {
		if stopped {
			l.markUp()
			if err := apiserver.Start(); err != nil {
				t.Errorf("start the API server again: %v", err)
			}
		}
		close(halt)
		wait()
	}()
	loadStart := time.Now()
	at := func(frac float64) { // pace the schedule: wait until this fraction of the duration has passed
		select {
		case <-time.After(time.Until(loadStart.Add(time.Duration(frac * float64(duration))))):
		case <-t.Context().Done():
		}
	}

	// Fault 1: a conflict burst. Fresh sessions each refreshed on every replica at once (duplicates
	// inside the grace period), all hitting the policy's shards together.
	at(0.15)
	conflicts := f.sumMetric("tokenwarden_store_conflicts_total")
	burst := make([]*session, 30)
	for i := range burst {
		r := f.login(i, "alice")
		burst[i] = &session{rt: r.str("refresh_token"), at: r.str("access_token")}
	}
	var wg sync.WaitGroup
	answers := make([][3]response, len(burst))
	start := make(chan struct{})
	for i := range burst {
		for k := range 3 {
			wg.Go(func() {
				<-start
				answers[i][k], _ = f.tryRefresh(k, burst[i].rt)
			})
		}
	}
	close(start)
	wg.Wait()
	for i, s := range burst {
		var next string
		for k := range 3 {
			r := answers[i][k]
			switch {
			case r.status == http.StatusOK:
				if next != "" && r.str("refresh_token") != next {
					l.violate("burst session %d: one refresh token redeemed for two successors", i)
				}
				next, s.at = r.str("refresh_token"), r.str("access_token")
			case undecided(r, nil):
			default:
				l.violate("burst session %d on replica %d: %v", i, k, r)
			}
		}
		if next != "" {
			s.prev, s.rt = s.rt, next
			l.count(opDuplicate, 1)
		}
	}
	l.adopt(burst)
	l.fault("conflict burst: %d sessions x 3 replicas at once (%.0f store conflicts)", len(burst),
		f.sumMetric("tokenwarden_store_conflicts_total")-conflicts)

	// Fault 2: a replica restarted (graceful stop, a new process in its place on another port).
	at(0.35)
	f.replica(1).stop()
	f.replace(1, f.addReplica(replicaOptions{writeTimeout: 2 * time.Second}))
	f.mu.Lock()
	f.replicas = f.replicas[:3] // addReplica appended it; it already took replica 1's place
	f.mu.Unlock()
	l.fault("replica 1 restarted")

	// Fault 3: the API server stopped, and started again once the load has met it.
	at(0.55)
	if err := apiserver.Stop(); err != nil {
		t.Fatalf("stop the API server: %v", err)
	}
	stopped = true
	l.markDown()
	n := l.undecidedCount(opRefresh)
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		return l.undecidedCount(opRefresh) >= n+5, "refreshes meeting the stopped API server"
	})
	l.markUp()
	if err := apiserver.Start(); err != nil {
		t.Fatalf("start the API server again: %v", err)
	}
	stopped = false
	l.fault("API server stopped and started again")

	at(1)
	close(halt)
	wait()
	halt, wait = make(chan struct{}), func() {}
	sum := l.verify()
	t.Log(l.table(fmt.Sprintf("soak: %s of load", duration), sum, time.Since(began)))
	if len(sum.lost) > 0 || len(l.violations) > 0 {
		t.Fatalf("%d acknowledged operations lost, %d invariant violations", len(sum.lost), len(l.violations))
	}
}

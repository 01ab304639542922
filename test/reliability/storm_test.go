package reliability

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// TestConflictStormOnOneShard has five replicas write one shard at once: chains of refreshes of distinct
// sessions, and the same refresh tokens presented to every replica at once (no grace period). Every chain
// makes progress, no refresh token is redeemed twice, and every acknowledged rotation holds afterwards.
// Conflicts are reported, not required.
func TestConflictStormOnOneShard(t *testing.T) {
	const replicas, chains, steps, dups = 5, 40, 5, 10
	f := newFixture(t, fixtureOptions{replicas: replicas, spec: func(s *v1alpha1.TokenPolicySpec) {
		s.Revocation.Shards = 1
		s.RefreshToken.ReuseGracePeriod = metav1.Duration{}
	}})
	conflictsBefore := f.sumMetric("tokenwarden_store_conflicts_total")

	chainRT := make([]string, chains)
	for i := range chains {
		chainRT[i] = f.login(i, "alice").str("refresh_token")
	}
	dupRT := make([]string, dups)
	for i := range dups {
		dupRT[i] = f.login(i, "bob").str("refresh_token")
	}

	start := make(chan struct{})
	var wg sync.WaitGroup
	prevRT := make([]string, chains)
	var mu sync.Mutex
	retried := 0
	for c := range chains {
		wg.Go(func() {
			<-start
			for step := range steps {
				var r response
				var err error
				for attempt := 0; ; attempt++ { // bounded: a chain that gets no decision in 20 tries fails
					r, err = f.tryRefresh(c+step, chainRT[c])
					if !undecided(r, err) || attempt == 20 {
						break
					}
					mu.Lock()
					retried++
					mu.Unlock()
				}
				if err != nil || r.status != http.StatusOK {
					t.Errorf("chain %d step %d: %v %v; want every chain to make progress", c, step, r, err)
					return
				}
				prevRT[c], chainRT[c] = chainRT[c], r.str("refresh_token")
			}
		})
	}
	dupResults := make([][replicas]response, dups)
	dupErrs := make([][replicas]error, dups)
	for d := range dups {
		for k := range replicas {
			wg.Go(func() {
				<-start
				dupResults[d][k], dupErrs[d][k] = f.tryRefresh(k, dupRT[d])
			})
		}
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	for d := range dups {
		var winner string
		for k := range replicas {
			r, err := dupResults[d][k], dupErrs[d][k]
			switch {
			case err == nil && r.status == http.StatusOK:
				if winner != "" {
					t.Errorf("session %d: one refresh token was redeemed on two replicas", d)
				}
				winner = r.str("refresh_token")
			case undecided(r, err), r.errorIs(http.StatusBadRequest, "invalid_grant"):
			default:
				t.Errorf("session %d, replica %d: %v %v; want 200 once and invalid_grant for the duplicates", d, k, r, err)
			}
		}
		// The duplicates were reuse: the whole session is revoked, the winner's successor included.
		if winner != "" {
			if r := f.refresh(d, winner); !r.errorIs(http.StatusBadRequest, "invalid_grant") {
				t.Errorf("session %d: the successor of a reused token still refreshes: %v", d, r)
			}
		}
	}
	for c := range chains {
		if r := f.refresh(c+1, chainRT[c]); r.status != http.StatusOK {
			t.Errorf("chain %d: its last acknowledged refresh token: %v; want 200", c, r)
		}
		if r := f.refresh(c+2, prevRT[c]); !r.errorIs(http.StatusBadRequest, "invalid_grant") {
			t.Errorf("chain %d: its spent refresh token: %v; want invalid_grant", c, r)
		}
	}
	conflicts := f.sumMetric("tokenwarden_store_conflicts_total") - conflictsBefore
	writes := f.sumMetric("tokenwarden_store_writes_total")
	ops := f.sumMetric("tokenwarden_store_operations_total")
	t.Logf("%s", fmt.Sprintf("conflict storm: %d replicas, 1 shard, %d chains x %d refreshes + %d tokens x %d presentations: "+
		"%.0f store operations in %.0f shard writes, %.0f conflicts, %d undecided answers retried",
		replicas, chains, steps, dups, replicas, ops, writes, conflicts, retried))
}

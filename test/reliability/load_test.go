package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Kinds of operation the load generator performs.
const (
	opLogin          = "login"
	opRefresh        = "refresh"
	opDuplicate      = "duplicate refresh"
	opIntrospect     = "introspect"
	opLogout         = "logout"
	opRevoke         = "revoke (RFC 7009)"
	opRevokedRefresh = "refresh of a revoked session"
)

// session is one client's view of a session: the tokens of its last acknowledged answer.
type session struct {
	rt, prev, at string // current refresh token, the one before it ("" at generation 0), newest access token
	revoked      bool   // a logout or revocation was acknowledged (200)
	pending      string // a logout or revocation got no definite answer ("logout" or "revoke"): retried until acknowledged
}

// load drives a fixture with a mix of operations from several workers, each owning its sessions, and keeps
// the ledger of what was acknowledged. A refresh, logout or revocation without a definite answer (503 or no
// response) is retried with the same token, as a client would; the policy's grace period makes a retried
// refresh whose first answer was lost get the same successor.
type load struct {
	t testing.TB
	f *fixture

	mu         sync.Mutex
	ops        map[string]int // definite answers, by kind
	errs       map[string]int // answers that decided nothing, by kind and cause
	violations []string
	sessions   [][]*session // by worker
	faults     []string

	// down is odd while a test has the API server or etcd stopped: a refresh, logout or revocation that
	// both started and ended inside one such window must not be acknowledged.
	down atomic.Int64
}

func newLoad(t testing.TB, f *fixture) *load {
	return &load{t: t, f: f, ops: map[string]int{}, errs: map[string]int{}}
}

// markDown and markUp bracket a window in which the revocation state cannot be written.
func (l *load) markDown() { l.down.Add(1) }
func (l *load) markUp()   { l.down.Add(1) }

func (l *load) fault(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.faults = append(l.faults, fmt.Sprintf(format, args...))
}

func (l *load) ok(kind string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops[kind]++
}

// failed counts an answer that decided nothing: a transport error or a 503.
func (l *load) failed(kind string, r response, err error) {
	cause := "no response"
	if err == nil {
		cause = fmt.Sprintf("%d %s", r.status, r.str("error"))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs[kind+": "+cause]++
}

func (l *load) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.violations = append(l.violations, msg)
	l.t.Errorf("invariant violated: %s", msg)
}

// undecided reports whether an answer decided nothing: no response, or 503 temporarily_unavailable.
func undecided(r response, err error) bool {
	return err != nil || r.errorIs(http.StatusServiceUnavailable, "temporarily_unavailable")
}

// loadConfig shapes a run.
type loadConfig struct {
	workers    int
	sessions   int           // sessions each worker keeps active
	maxOps     int           // per worker: the loop is bounded even if stop never comes
	pace       time.Duration // pause between a worker's operations
	duplicates bool          // include concurrent duplicate presentations of one refresh token
}

// run starts the workers; they stop when stop is closed or after maxOps each. wait returns once they have.
func (l *load) run(c loadConfig, stop <-chan struct{}) (wait func()) {
	l.mu.Lock()
	base := len(l.sessions)
	for range c.workers {
		l.sessions = append(l.sessions, nil)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for w := range c.workers {
		wg.Go(func() { l.worker(base+w, c, stop) })
	}
	return wg.Wait
}

func (l *load) worker(w int, c loadConfig, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	var mine []*session
	defer func() {
		l.mu.Lock()
		l.sessions[w] = mine
		l.mu.Unlock()
	}()
	active := func() []*session {
		var out []*session
		for _, s := range mine {
			if !s.revoked && s.pending == "" {
				out = append(out, s)
			}
		}
		return out
	}
	for n := range c.maxOps {
		select {
		case <-stop:
			return
		default:
		}
		replica := rng.IntN(1 << 20)
		if i := slices.IndexFunc(mine, func(s *session) bool { return s.pending != "" }); i >= 0 && n%2 == 0 {
			l.revoke(replica, mine[i], mine[i].pending)
		} else {
			act := active()
			var revoked []*session
			for _, s := range mine {
				if s.revoked {
					revoked = append(revoked, s)
				}
			}
			pick := func() *session { return act[rng.IntN(len(act))] }
			switch r := rng.IntN(100); {
			case len(act) < c.sessions || r < 8:
				if s := l.login(replica, []string{"alice", "bob", "carol"}[rng.IntN(3)]); s != nil {
					mine = append(mine, s)
				}
			case r < 50:
				l.refresh(replica, pick())
			case r < 58 && c.duplicates:
				l.duplicate(replica, pick())
			case r < 75:
				l.introspect(replica, pick())
			case r < 83:
				l.revoke(replica, pick(), "logout")
			case r < 90:
				l.revoke(replica, pick(), "revoke")
			case len(revoked) > 0:
				l.refreshRevoked(replica, revoked[rng.IntN(len(revoked))])
			default:
				l.refresh(replica, pick())
			}
		}
		if c.pace > 0 {
			select {
			case <-stop:
				return
			case <-time.After(c.pace):
			}
		}
	}
}

// timed runs op and reports whether it ran entirely inside one window in which state could not be written.
func (l *load) timed(op func()) (insideOutage bool) {
	before := l.down.Load()
	op()
	return before%2 == 1 && l.down.Load() == before
}

func (l *load) login(replica int, user string) *session {
	r, err := l.f.tryLogin(replica, user)
	if err != nil || r.status != http.StatusOK {
		l.failed(opLogin, r, err)
		return nil
	}
	l.ok(opLogin)
	return &session{rt: r.str("refresh_token"), at: r.str("access_token")}
}

// refresh presents the session's current refresh token once.
func (l *load) refresh(replica int, s *session) {
	var r response
	var err error
	inside := l.timed(func() { r, err = l.f.tryRefresh(replica, s.rt) })
	switch {
	case err == nil && r.status == http.StatusOK:
		if inside {
			l.violate("a refresh was answered with tokens while the revocation state could not be written (session %s)", sid(s.rt))
		}
		l.ok(opRefresh)
		s.prev, s.rt, s.at = s.rt, r.str("refresh_token"), r.str("access_token")
	case undecided(r, err):
		l.failed(opRefresh, r, err)
	default:
		l.violate("the current refresh token of active session %s was refused: %v", sid(s.rt), r)
	}
}

// duplicate presents the session's current refresh token to two replicas at once: within the grace period
// both may succeed, but only with the same successor.
func (l *load) duplicate(replica int, s *session) {
	var rs [2]response
	var errs [2]error
	var wg sync.WaitGroup
	for k := range 2 {
		wg.Go(func() { rs[k], errs[k] = l.f.tryRefresh(replica+k, s.rt) })
	}
	wg.Wait()
	var next string
	for k := range 2 {
		switch r, err := rs[k], errs[k]; {
		case err == nil && r.status == http.StatusOK:
			if next != "" && r.str("refresh_token") != next {
				l.violate("one refresh token of session %s was redeemed twice, for two different successors", sid(s.rt))
			}
			next = r.str("refresh_token")
			s.at = r.str("access_token")
		case undecided(r, err):
			l.failed(opDuplicate, r, err)
		default:
			l.violate("a duplicate presentation inside the grace period of session %s was refused: %v", sid(s.rt), r)
		}
	}
	if next != "" {
		l.ok(opDuplicate)
		s.prev, s.rt = s.rt, next
	}
}

// introspect asks about the session's access token: an active session's token must be active.
func (l *load) introspect(replica int, s *session) {
	r, err := l.f.tryIntrospect(replica, s.at)
	switch {
	case err == nil && r.status == http.StatusOK:
		l.ok(opIntrospect)
		if r.json["active"] != true {
			l.violate("introspection reported the access token of active session %s inactive", sid(s.at))
		}
	case undecided(r, err):
		l.failed(opIntrospect, r, err)
	default:
		l.violate("introspection failed: %v", r)
	}
}

// revoke ends the session with the JSON logout (how: "logout") or RFC 7009 revocation of one of its tokens.
func (l *load) revoke(replica int, s *session, how string) {
	var r response
	var err error
	kind := opLogout
	inside := l.timed(func() {
		if how == "logout" {
			r, err = l.f.tryLogout(replica, s.rt)
		} else {
			kind = opRevoke
			if replica%2 == 0 {
				r, err = l.f.tryRevoke(replica, s.at, "access_token")
			} else {
				r, err = l.f.tryRevoke(replica, s.rt, "refresh_token")
			}
		}
	})
	switch {
	case err == nil && r.status == http.StatusOK:
		if inside {
			l.violate("a %s was acknowledged while the revocation state could not be written (session %s)", kind, sid(s.rt))
		}
		l.ok(kind)
		s.revoked, s.pending = true, ""
	case undecided(r, err):
		l.failed(kind, r, err)
		s.pending = how
	default:
		l.violate("%s of active session %s was refused: %v", kind, sid(s.rt), r)
	}
}

// refreshRevoked presents the refresh token of a session whose revocation was acknowledged: never a token.
func (l *load) refreshRevoked(replica int, s *session) {
	r, err := l.f.tryRefresh(replica, s.rt)
	switch {
	case err == nil && r.errorIs(http.StatusBadRequest, "invalid_grant"):
		l.ok(opRevokedRefresh)
	case undecided(r, err):
		l.failed(opRevokedRefresh, r, err)
	default:
		l.violate("session %s refreshed after its revocation was acknowledged: %v", sid(s.rt), r)
	}
}

// summary is what verify found.
type summary struct {
	verifiedRotations, verifiedRevocations int
	lost                                   []string
}

// verify settles every revocation still pending, then checks every acknowledged operation against the
// API server's state through the replicas: an acknowledged revocation refuses the session's refresh token
// and makes its access token inactive on every replica; an acknowledged rotation left the last refresh
// token current (it refreshes) and its predecessor spent (presenting it is reuse).
func (l *load) verify() summary {
	l.t.Helper()
	f := l.f
	var all []*session
	l.mu.Lock()
	for _, ss := range l.sessions {
		all = append(all, ss...)
	}
	l.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	retry := func(op func() (response, error)) (r response, err error) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		_ = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
			r, err = op()
			return !undecided(r, err), nil
		})
		return r, err
	}
	for i, s := range all {
		if s.pending == "" {
			continue
		}
		r, err := retry(func() (response, error) {
			if s.pending == "logout" {
				return f.tryLogout(i, s.rt)
			}
			return f.tryRevoke(i, s.rt, "refresh_token")
		})
		if err != nil || r.status != http.StatusOK {
			l.t.Errorf("a pending %s of session %s could not be settled: %v %v", s.pending, sid(s.rt), r, err)
			continue
		}
		s.revoked, s.pending = true, ""
	}

	var sum summary
	var mu sync.Mutex
	lost := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		sum.lost = append(sum.lost, fmt.Sprintf(format, args...))
	}
	var wg sync.WaitGroup
	work := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range work {
				s := all[i]
				id := sid(s.rt)
				if s.revoked {
					r, err := retry(func() (response, error) { return f.tryRefresh(i, s.rt) })
					if err != nil || !r.errorIs(http.StatusBadRequest, "invalid_grant") {
						lost("revocation of session %s: its refresh token got %v %v", id, r, err)
						continue
					}
					for k := range f.count() {
						ok := false
						ctx, cancel := context.WithDeadline(context.Background(), deadline)
						_ = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
							r, err := f.tryIntrospect(i+k, s.at)
							ok = err == nil && r.status == http.StatusOK && r.json["active"] == false
							return ok, nil
						})
						cancel()
						if !ok {
							lost("revocation of session %s: replica %d still reports its access token active", id, (i+k)%f.count())
						}
					}
					mu.Lock()
					sum.verifiedRevocations++
					mu.Unlock()
					continue
				}
				r, err := retry(func() (response, error) { return f.tryRefresh(i, s.rt) })
				if err != nil || r.status != http.StatusOK {
					lost("session %s: its last acknowledged refresh token got %v %v", id, r, err)
					continue
				}
				if s.prev != "" {
					r, err := retry(func() (response, error) { return f.tryRefresh(i+1, s.prev) })
					if err != nil || !r.errorIs(http.StatusBadRequest, "invalid_grant") {
						lost("rotation of session %s: the spent refresh token got %v %v", id, r, err)
						continue
					}
					mu.Lock()
					sum.verifiedRotations++
					mu.Unlock()
				}
			}
		})
	}
	for i := range all {
		work <- i
	}
	close(work)
	wg.Wait()
	for _, m := range sum.lost {
		l.t.Errorf("acknowledged operation lost: %s", m)
	}
	return sum
}

// table is the run's figures as text.
func (l *load) table(title string, sum summary, took time.Duration) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s (%s, %d replicas)\n", title, took.Round(time.Second), l.f.count())
	fmt.Fprintf(&b, "  %-40s %8s\n", "operation (definite answers)", "count")
	total := 0
	for _, k := range sortedKeys(l.ops) {
		fmt.Fprintf(&b, "  %-40s %8d\n", k, l.ops[k])
		total += l.ops[k]
	}
	fmt.Fprintf(&b, "  %-40s %8d\n", "total", total)
	fmt.Fprintf(&b, "  %-40s %8s\n", "undecided answers (retried)", "count")
	for _, k := range sortedKeys(l.errs) {
		fmt.Fprintf(&b, "  %-40s %8d\n", k, l.errs[k])
	}
	fmt.Fprintf(&b, "  faults injected: %d\n", len(l.faults))
	for _, fl := range l.faults {
		fmt.Fprintf(&b, "    - %s\n", fl)
	}
	fmt.Fprintf(&b, "  acknowledged rotations verified:   %d\n", sum.verifiedRotations)
	fmt.Fprintf(&b, "  acknowledged revocations verified: %d\n", sum.verifiedRevocations)
	fmt.Fprintf(&b, "  invariant violations during load:  %d\n", len(l.violations))
	fmt.Fprintf(&b, "  lost:                              %d\n", len(sum.lost))
	return b.String()
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// acked is the number of definite answers of kind so far.
func (l *load) acked(kind string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ops[kind]
}

// undecidedCount is the number of answers of kind that decided nothing so far.
func (l *load) undecidedCount(kind string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for k, v := range l.errs {
		if strings.HasPrefix(k, kind+": ") {
			n += v
		}
	}
	return n
}

// adopt adds sessions a test drove itself to the ledger, as one more worker's.
func (l *load) adopt(ss []*session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sessions = append(l.sessions, ss)
}

// count records n definite answers of kind that a test obtained itself.
func (l *load) count(kind string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops[kind] += n
}

package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// Harness is what the suite needs from an implementation.
type Harness struct {
	// Replicas returns n Stores that share one state, as n issuer replicas do, for a policy that the
	// harness has prepared with the given number of shards.
	Replicas func(t *testing.T, n, shards int) (policy types.NamespacedName, stores []revocation.Store)
	// Propagation bounds how long a durable change may take to be seen by Valid on every replica.
	Propagation time.Duration
	// Unobserved, if set, takes away from every replica what it needs to tell the state of a session of
	// shard (the ConfigMap store: the shard's base, deleted behind its back), and returns a function that
	// gives it back as it was. A Store that always holds all of its state (Memory) leaves it nil, and the
	// suite skips what needs it.
	Unobserved func(t *testing.T, policy types.NamespacedName, shard int) (restore func())
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type session struct {
	place revocation.Place
	id    string
	sub   string
	auth  time.Time
}

var sessions int

func newSession(policy types.NamespacedName, shards int, subject string) session {
	sessions++
	shard := sessions % shards
	return session{place: revocation.Place{Policy: policy, Shard: shard}, id: revocation.NewSessionID(shard), sub: subject, auth: t0}
}

func (s session) refresh(gen uint64, now time.Time, grace, idle time.Duration) revocation.RefreshRequest {
	return revocation.RefreshRequest{Place: s.place, SessionID: s.id, Subject: s.sub, Generation: gen, AuthTime: s.auth,
		Expiry: s.auth.Add(24 * time.Hour), Idle: idle, Grace: grace, Now: now}
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	ctx := context.Background()
	const shards = 3

	t.Run("a refresh moves a session one generation forward", func(t *testing.T) {
		policy, st := h.Replicas(t, 1, shards)
		s := newSession(policy, shards, "alice")
		res, err := st[0].Refresh(ctx, s.refresh(0, t0.Add(time.Minute), 0, 0))
		if err != nil || res.Generation != 1 || res.Duplicate || !res.IssuedAt.Equal(t0.Add(time.Minute)) {
			t.Fatalf("first refresh: got %+v, %v; want generation 1 issued at %v", res, err, t0.Add(time.Minute))
		}
		res, err = st[0].Refresh(ctx, s.refresh(1, t0.Add(2*time.Minute), 0, 0))
		if err != nil || res.Generation != 2 {
			t.Fatalf("second refresh: got %+v, %v; want generation 2", res, err)
		}
		one, err1 := st[0].Current(policy, s.id, 1)
		two, err2 := st[0].Current(policy, s.id, 2)
		if one || !two || err1 != nil || err2 != nil {
			t.Fatalf("after two refreshes: generation 1 current %v (%v), 2 current %v (%v); want only 2", one, err1, two, err2)
		}
		if cur, err := st[0].Current(policy, newSession(policy, shards, "alice").id, 0); !cur || err != nil {
			t.Fatalf("a session without a record: generation 0 current %v, %v; want true", cur, err)
		}
	})

	t.Run("an older generation outside the grace period revokes the session on every replica", func(t *testing.T) {
		policy, st := h.Replicas(t, 3, shards)
		s := newSession(policy, shards, "alice")
		mustRefresh(t, st[0], s.refresh(0, t0.Add(time.Minute), 0, 0))
		if _, err := st[1].Refresh(ctx, s.refresh(0, t0.Add(2*time.Minute), 0, 0)); !errors.Is(err, revocation.ErrReuse) {
			t.Fatalf("reuse of generation 0: got %v; want ErrReuse", err)
		}
		if _, err := st[2].Refresh(ctx, s.refresh(1, t0.Add(3*time.Minute), 0, 0)); !errors.Is(err, revocation.ErrRevoked) {
			t.Fatalf("the legitimate holder's refresh after reuse: got %v; want ErrRevoked", err)
		}
		eventuallyInvalid(t, h, st, policy, s)
	})

	t.Run("concurrent refreshes of one token across replicas: exactly one succeeds", func(t *testing.T) {
		policy, st := h.Replicas(t, 3, shards)
		s := newSession(policy, shards, "bob")
		results, errs := concurrently(24, func(i int) (revocation.RefreshResult, error) {
			return st[i%len(st)].Refresh(ctx, s.refresh(0, t0.Add(time.Minute), 0, 0))
		})
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
				if results[i].Generation != 1 {
					t.Errorf("winner got generation %d; want 1", results[i].Generation)
				}
			case !errors.Is(err, revocation.ErrReuse) && !errors.Is(err, revocation.ErrRevoked):
				t.Errorf("loser %d: got %v; want ErrReuse or ErrRevoked", i, err)
			}
		}
		if ok != 1 {
			t.Fatalf("successful refreshes: got %d; want exactly 1", ok)
		}
		if _, err := st[0].Refresh(ctx, s.refresh(1, t0.Add(2*time.Minute), 0, 0)); !errors.Is(err, revocation.ErrRevoked) {
			t.Fatalf("the winner's next refresh: got %v; want ErrRevoked (reuse revoked the session)", err)
		}
		eventuallyInvalid(t, h, st, policy, s)
	})

	t.Run("concurrent duplicates inside the grace period all get the same successor", func(t *testing.T) {
		policy, st := h.Replicas(t, 3, shards)
		s := newSession(policy, shards, "carol")
		results, errs := concurrently(24, func(i int) (revocation.RefreshResult, error) {
			return st[i%len(st)].Refresh(ctx, s.refresh(0, t0.Add(time.Minute+time.Duration(i)*time.Millisecond), 10*time.Second, 0))
		})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("duplicate %d: %v; want success", i, err)
			}
			if results[i].Generation != 1 || !results[i].IssuedAt.Equal(results[0].IssuedAt) {
				t.Fatalf("duplicate %d: got %+v; want generation 1 issued at %v like the others", i, results[i], results[0].IssuedAt)
			}
		}
		res := mustRefresh(t, st[1], s.refresh(1, t0.Add(2*time.Minute), 10*time.Second, 0))
		if res.Generation != 2 {
			t.Fatalf("refresh of the successor: generation %d; want 2", res.Generation)
		}
		if _, err := st[2].Refresh(ctx, s.refresh(0, t0.Add(3*time.Minute), 10*time.Second, 0)); !errors.Is(err, revocation.ErrReuse) {
			t.Fatalf("generation 0 again after the grace period: got %v; want ErrReuse", err)
		}
	})

	t.Run("a duplicate just outside the grace period is reuse", func(t *testing.T) {
		policy, st := h.Replicas(t, 1, shards)
		s := newSession(policy, shards, "dave")
		mustRefresh(t, st[0], s.refresh(0, t0, 5*time.Second, 0))
		if res, err := st[0].Refresh(ctx, s.refresh(0, t0.Add(5*time.Second), 5*time.Second, 0)); err != nil || !res.Duplicate {
			t.Fatalf("at the end of the grace period: got %+v, %v; want a duplicate", res, err)
		}
		if _, err := st[0].Refresh(ctx, s.refresh(0, t0.Add(6*time.Second), 5*time.Second, 0)); !errors.Is(err, revocation.ErrReuse) {
			t.Fatalf("a second after the grace period: got %v; want ErrReuse", err)
		}
	})

	t.Run("a revoked session cannot refresh and is invalid on every replica", func(t *testing.T) {
		policy, st := h.Replicas(t, 3, shards)
		for _, refreshedFirst := range []bool{false, true} {
			s := newSession(policy, shards, "erin")
			if refreshedFirst {
				mustRefresh(t, st[0], s.refresh(0, t0, 0, 0))
			}
			if err := st[1].RevokeSession(ctx, revocation.RevokeSessionRequest{Place: s.place, SessionID: s.id, Subject: s.sub,
				Expiry: s.auth.Add(24 * time.Hour), Reason: revocation.ReasonLogout, Now: t0.Add(time.Minute)}); err != nil {
				t.Fatalf("revoke: %v", err)
			}
			gen := uint64(0)
			if refreshedFirst {
				gen = 1
			}
			if _, err := st[2].Refresh(ctx, s.refresh(gen, t0.Add(2*time.Minute), 0, 0)); !errors.Is(err, revocation.ErrRevoked) {
				t.Fatalf("refresh after revocation (refreshed first: %v): got %v; want ErrRevoked", refreshedFirst, err)
			}
			eventuallyInvalid(t, h, st, policy, s)
		}
	})

	t.Run("a subject-wide revocation ends the sessions that logged in before it, and no others", func(t *testing.T) {
		policy, st := h.Replicas(t, 3, shards)
		before := newSession(policy, shards, "frank")
		after := newSession(policy, shards, "frank")
		after.auth = t0.Add(time.Hour)
		other := newSession(policy, shards, "grace")
		if err := st[0].RevokeSubject(ctx, revocation.RevokeSubjectRequest{Place: revocation.Place{Policy: policy, Shard: revocation.ShardOf("frank", shards)},
			Subject: "frank", Before: t0.Add(30 * time.Minute), Expiry: t0.Add(48 * time.Hour), Reason: revocation.ReasonRevoked}); err != nil {
			t.Fatalf("revoke subject: %v", err)
		}
		eventuallyInvalid(t, h, st, policy, before)
		for i, s := range st {
			if _, err := s.Refresh(ctx, before.refresh(0, t0.Add(2*time.Hour), 0, 0)); !errors.Is(err, revocation.ErrRevoked) {
				t.Fatalf("replica %d: refresh of a session from before the mark: got %v; want ErrRevoked", i, err)
			}
			if err := s.Valid(policy, after.id, after.sub, after.auth); err != nil {
				t.Fatalf("replica %d: a session that logged in after the mark: %v; want valid", i, err)
			}
			if err := s.Valid(policy, other.id, other.sub, other.auth); err != nil {
				t.Fatalf("replica %d: another subject's session: %v; want valid", i, err)
			}
		}
		mustRefresh(t, st[1], after.refresh(0, t0.Add(2*time.Hour), 0, 0))
		mustRefresh(t, st[2], other.refresh(0, t0.Add(2*time.Hour), 0, 0))
	})

	t.Run("idle timeout and absolute expiry end a session", func(t *testing.T) {
		policy, st := h.Replicas(t, 1, shards)
		idle := time.Hour
		s := newSession(policy, shards, "heidi")
		if _, err := st[0].Refresh(ctx, s.refresh(0, t0.Add(idle+time.Second), 0, idle)); !errors.Is(err, revocation.ErrExpired) {
			t.Fatalf("first refresh after the idle timeout: got %v; want ErrExpired", err)
		}
		s = newSession(policy, shards, "heidi")
		mustRefresh(t, st[0], s.refresh(0, t0.Add(50*time.Minute), 0, idle))
		mustRefresh(t, st[0], s.refresh(1, t0.Add(100*time.Minute), 0, idle)) // within an hour of the last refresh
		if _, err := st[0].Refresh(ctx, s.refresh(2, t0.Add(161*time.Minute), 0, idle)); !errors.Is(err, revocation.ErrExpired) {
			t.Fatalf("refresh 61 minutes after the last: got %v; want ErrExpired", err)
		}
		s = newSession(policy, shards, "heidi")
		if _, err := st[0].Refresh(ctx, s.refresh(0, t0.Add(24*time.Hour), 0, 0)); !errors.Is(err, revocation.ErrExpired) {
			t.Fatalf("refresh at the absolute expiry: got %v; want ErrExpired", err)
		}
	})

	t.Run("a replica that cannot tell a session's state says so, never valid, until it can again", func(t *testing.T) {
		if h.Unobserved == nil {
			t.Skip("this Store always holds all of its state")
		}
		policy, st := h.Replicas(t, 2, shards)
		revoked, active, elsewhere := newSession(policy, shards, "judy"), newSession(policy, shards, "judy"), newSession(policy, shards, "judy")
		active.place.Shard, active.id = revoked.place.Shard, revocation.NewSessionID(revoked.place.Shard)
		elsewhere.place.Shard = (revoked.place.Shard + 1) % shards
		elsewhere.id = revocation.NewSessionID(elsewhere.place.Shard)
		mustRefresh(t, st[0], active.refresh(0, t0.Add(time.Minute), 0, 0))
		if err := st[1].RevokeSession(ctx, revocation.RevokeSessionRequest{Place: revoked.place, SessionID: revoked.id, Subject: revoked.sub,
			Expiry: revoked.auth.Add(24 * time.Hour), Reason: revocation.ReasonLogout, Now: t0.Add(time.Minute)}); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		eventuallyInvalid(t, h, st, policy, revoked)
		eventually(t, h, st, "the active session valid and current at generation 1", func(s revocation.Store) (bool, string) {
			cur, err := s.Current(policy, active.id, 1)
			valid := s.Valid(policy, active.id, active.sub, active.auth)
			return cur && err == nil && valid == nil, fmt.Sprintf("current %v, %v; valid %v", cur, err, valid)
		})

		restore := h.Unobserved(t, policy, revoked.place.Shard)
		eventually(t, h, st, "both sessions of the shard unavailable", func(s revocation.Store) (bool, string) {
			r, a := s.Valid(policy, revoked.id, revoked.sub, revoked.auth), s.Valid(policy, active.id, active.sub, active.auth)
			cur, err := s.Current(policy, active.id, 1)
			if r == nil {
				// Before the replica notices, it answers from what it held; after, it cannot tell. Never valid.
				t.Fatalf("while the shard is taken away: the revoked session is valid; want ErrRevoked, then ErrUnavailable")
			}
			return errors.Is(r, revocation.ErrUnavailable) && errors.Is(a, revocation.ErrUnavailable) && errors.Is(err, revocation.ErrUnavailable) && !cur,
				fmt.Sprintf("revoked %v; active %v; current %v, %v", r, a, cur, err)
		})
		for i, s := range st {
			if err := s.Valid(policy, elsewhere.id, elsewhere.sub, elsewhere.auth); err != nil {
				t.Fatalf("replica %d: a session of another shard: %v; want valid", i, err)
			}
		}

		restore()
		eventuallyInvalid(t, h, st, policy, revoked)
		eventually(t, h, st, "the active session valid and current again", func(s revocation.Store) (bool, string) {
			cur, err := s.Current(policy, active.id, 1)
			valid := s.Valid(policy, active.id, active.sub, active.auth)
			return cur && err == nil && valid == nil, fmt.Sprintf("current %v, %v; valid %v", cur, err, valid)
		})
	})

	t.Run("a generation the store never issued is refused", func(t *testing.T) {
		policy, st := h.Replicas(t, 1, shards)
		s := newSession(policy, shards, "ivan")
		if _, err := st[0].Refresh(ctx, s.refresh(5, t0, 0, 0)); !errors.Is(err, revocation.ErrUnknownSession) {
			t.Fatalf("generation 5 of a session without a record: got %v; want ErrUnknownSession", err)
		}
	})
}

func mustRefresh(t *testing.T, s revocation.Store, req revocation.RefreshRequest) revocation.RefreshResult {
	t.Helper()
	res, err := s.Refresh(context.Background(), req)
	if err != nil {
		t.Fatalf("refresh of generation %d: %v", req.Generation, err)
	}
	return res
}

func concurrently(n int, f func(i int) (revocation.RefreshResult, error)) ([]revocation.RefreshResult, []error) {
	results, errs := make([]revocation.RefreshResult, n), make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return results, errs
}

// eventually waits until cond holds on every replica.
func eventually(t *testing.T, h Harness, st []revocation.Store, what string, cond func(revocation.Store) (bool, string)) {
	t.Helper()
	for i, store := range st {
		var last string
		err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, h.Propagation, true, func(context.Context) (bool, error) {
			var ok bool
			ok, last = cond(store)
			return ok, nil
		})
		if err != nil {
			t.Fatalf("replica %d: want %s within %s; last: %s", i, what, h.Propagation, last)
		}
	}
}

func eventuallyInvalid(t *testing.T, h Harness, st []revocation.Store, policy types.NamespacedName, s session) {
	t.Helper()
	for i, store := range st {
		var last error
		err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, h.Propagation, true, func(context.Context) (bool, error) {
			last = store.Valid(policy, s.id, s.sub, s.auth)
			return errors.Is(last, revocation.ErrRevoked), nil
		})
		if err != nil {
			t.Fatalf("replica %d still takes session %s as valid after %s (last: %v)", i, s.id, h.Propagation, last)
		}
	}
}

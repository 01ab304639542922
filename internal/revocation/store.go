package revocation

import (
	"context"
	"errors"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Sentinel errors of a Store. The issuer maps ErrUnavailable and ErrShardFull to 503
// temporarily_unavailable (refresh, revocation and introspection alike) and the others to invalid_grant.
var (
	// ErrReuse: an older refresh-token generation was presented outside the grace period. The session has
	// been revoked (durably) before this error is returned.
	ErrReuse = errors.New("refresh token reused: session revoked")
	// ErrRevoked: the session, or every session of its subject, was revoked.
	ErrRevoked = errors.New("session revoked")
	// ErrExpired: the session passed its absolute expiry or its idle timeout.
	ErrExpired = errors.New("session expired")
	// ErrUnknownSession: the store has no record of a generation the token claims.
	ErrUnknownSession = errors.New("no such session generation")
	// ErrUnavailable: the state could not be read or written; nothing was decided (fail closed).
	ErrUnavailable = errors.New("revocation store unavailable")
	// ErrShardFull: the session's shard is at its byte budget and cannot take a new record.
	ErrShardFull = errors.New("revocation shard full")
)

// Place says where a session's records live: its policy and the shard fixed at login.
type Place struct {
	Policy types.NamespacedName
	Shard  int
}

// RefreshRequest asks to move a session from the presented generation to the next.
type RefreshRequest struct {
	Place
	SessionID  string
	Subject    string
	Generation uint64    // the generation of the refresh token presented
	AuthTime   time.Time // when the session logged in
	Expiry     time.Time // the session's absolute end
	Idle       time.Duration
	Grace      time.Duration
	Now        time.Time
}

// RefreshResult is the successor the caller mints tokens for.
type RefreshResult struct {
	Generation uint64    // the successor's generation
	IssuedAt   time.Time // the successor's issue time: on a grace duplicate, the first answer's
	Duplicate  bool      // a grace-period duplicate: the same successor as before, nothing written
}

// RevokeSessionRequest revokes one session.
type RevokeSessionRequest struct {
	Place
	SessionID string
	Subject   string
	Expiry    time.Time
	Reason    string
	Now       time.Time
}

// RevokeSubjectRequest revokes every session of Subject that logged in before Before: one record.
type RevokeSubjectRequest struct {
	Place   // the shard of the subject (ShardOf(subject, shards) at the policy's current shard count)
	Subject string
	Before  time.Time
	Expiry  time.Time // when the last session this can affect ends
	Reason  string
}

// Store keeps session and revocation state. Refresh and the revocations are durable once they return
// nil: every replica of the issuer then sees them.
type Store interface {
	Refresh(ctx context.Context, req RefreshRequest) (RefreshResult, error)
	RevokeSession(ctx context.Context, req RevokeSessionRequest) error
	RevokeSubject(ctx context.Context, req RevokeSubjectRequest) error
	// Valid reports, from what this replica has observed, whether the session may still be used: nil when
	// neither it nor its subject is revoked, an error wrapping ErrRevoked when one is, and an error wrapping
	// ErrUnavailable when what the replica has observed cannot tell (the objects that would hold the
	// session's record are not observed, or a record does not decode). "No record" is an answer only when
	// the replica has observed where the record would be. It never blocks on the network.
	Valid(policy types.NamespacedName, sessionID, subject string, authTime time.Time) error
	// Current reports, from what this replica has observed, whether generation is the session's newest
	// refresh token (a session without a record is at generation 0), or an error wrapping ErrUnavailable
	// when it cannot tell, as for Valid. It never blocks on the network.
	Current(policy types.NamespacedName, sessionID string, generation uint64) (bool, error)
}

// DecideRefresh is the one rule for a refresh, applied by every Store to the freshest record it holds.
// cur is the session's record (nil when it has none); revokedBefore is its subject's mark (zero when none).
// It returns the record to store (nil: nothing to write), the result, and an error; with ErrReuse the
// returned record (the revocation) must be stored before the error is reported.
func DecideRefresh(cur *Session, revokedBefore time.Time, req RefreshRequest) (*Session, RefreshResult, error) {
	now := req.Now.Truncate(time.Second) // tokens carry seconds: a duplicate must re-mint the same iat
	if !revokedBefore.IsZero() && req.AuthTime.Before(revokedBefore) {
		return nil, RefreshResult{}, ErrRevoked
	}
	if !now.Before(req.Expiry) {
		return nil, RefreshResult{}, ErrExpired
	}
	if cur == nil {
		if req.Generation != 0 {
			return nil, RefreshResult{}, ErrUnknownSession
		}
		if req.Idle > 0 && now.Sub(req.AuthTime) > req.Idle {
			return nil, RefreshResult{}, ErrExpired
		}
		next := &Session{Subject: req.Subject, Generation: 1, Rotated: now, Expiry: req.Expiry, State: Active}
		return next, RefreshResult{Generation: 1, IssuedAt: now}, nil
	}
	switch {
	case cur.State == Revoked:
		return nil, RefreshResult{}, ErrRevoked
	case cur.Generation == req.Generation:
		if req.Idle > 0 && now.Sub(cur.Rotated) > req.Idle {
			return nil, RefreshResult{}, ErrExpired
		}
		next := *cur
		next.Generation, next.Rotated = cur.Generation+1, now
		return &next, RefreshResult{Generation: next.Generation, IssuedAt: now}, nil
	case cur.Generation == req.Generation+1 && req.Grace > 0 && now.Sub(cur.Rotated) <= req.Grace:
		return nil, RefreshResult{Generation: cur.Generation, IssuedAt: cur.Rotated, Duplicate: true}, nil
	case cur.Generation > req.Generation:
		next := *cur
		next.State, next.Reason, next.RevokedAt = Revoked, ReasonReuse, &now
		return &next, RefreshResult{}, ErrReuse
	}
	return nil, RefreshResult{}, ErrUnknownSession
}

// DecideRevokeSession is the rule for revoking a session: idempotent, keeping the first reason.
func DecideRevokeSession(cur *Session, req RevokeSessionRequest) *Session {
	if cur != nil && cur.State == Revoked {
		return nil
	}
	now := req.Now.Truncate(time.Second)
	next := &Session{Subject: req.Subject, Expiry: req.Expiry, Rotated: now}
	if cur != nil {
		*next = *cur
	}
	next.State, next.Reason, next.RevokedAt = Revoked, req.Reason, &now
	if next.Expiry.Before(req.Expiry) {
		next.Expiry = req.Expiry
	}
	return next
}

// DecideRevokeSubject is the rule for a subject-wide revocation: the mark only moves forward.
func DecideRevokeSubject(cur *Subject, req RevokeSubjectRequest) *Subject {
	before := req.Before.Truncate(time.Second)
	if req.Before.After(before) {
		before = before.Add(time.Second) // round up: a login in the same second is revoked too
	}
	next := &Subject{Subject: req.Subject, RevokedBefore: before, Reason: req.Reason, Expiry: req.Expiry}
	if cur != nil {
		if !cur.RevokedBefore.Before(before) && !cur.Expiry.Before(req.Expiry) {
			return nil
		}
		if cur.RevokedBefore.After(next.RevokedBefore) {
			next.RevokedBefore, next.Reason = cur.RevokedBefore, cur.Reason
		}
		if cur.Expiry.After(next.Expiry) {
			next.Expiry = cur.Expiry
		}
	}
	return next
}

// CheckValid is the rule introspection applies to what a replica has observed.
func CheckValid(cur *Session, revokedBefore time.Time, authTime time.Time) error {
	if !revokedBefore.IsZero() && authTime.Before(revokedBefore) {
		return ErrRevoked
	}
	if cur != nil && cur.State == Revoked {
		return ErrRevoked
	}
	return nil
}

// IsCurrent is the rule for whether a refresh token of generation gen is the session's newest.
func IsCurrent(cur *Session, gen uint64) bool {
	if cur == nil {
		return gen == 0
	}
	return cur.Generation == gen
}

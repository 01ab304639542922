package issuer

import (
	"errors"
	"net/http"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// sessionRef names the session a token belongs to and a time by which the session has surely ended, for
// the revocation record's expiry.
type sessionRef struct {
	id, subject string
	expiry      time.Time
}

// serveRevoke is RFC 7009 token revocation: POST {iss}/revoke, form-encoded token and optional
// token_type_hint. A refresh token or an access token revokes its whole session. No client
// authentication is required: clients are public, and holding a token is what entitles one to end it.
// 200 with an empty body, also for tokens that are invalid, expired, of another policy or unknown
// (section 2.2); 400 without a token; 503 when the revocation could not be recorded, so the client retries.
func (s *Server) serveRevoke(w http.ResponseWriter, r *http.Request) {
	if e := s.revoke(r); e != nil {
		writeError(w, e)
		return
	}
	noStore(w.Header())
	w.WriteHeader(http.StatusOK)
}

func (s *Server) revoke(r *http.Request) *apiError {
	p, e := s.policy(r)
	if e != nil {
		return e
	}
	form, e := readForm(r)
	if e != nil {
		return e
	}
	raw := form.Get("token")
	if raw == "" {
		return badRequest(errInvalidRequest, "token is required")
	}
	ref, ok := s.sessionOf(p, raw, form.Get("token_type_hint"))
	if !ok {
		return nil
	}
	return s.revokeSession(r, p, ref, revocation.ReasonRevoked)
}

// sessionOf is the session of raw, a refresh or access token of p that verifies now. The hint says which
// kind to try first; any other hint is ignored (RFC 7009 section 2.1: it is only a hint).
func (s *Server) sessionOf(p *Policy, raw, hint string) (sessionRef, bool) {
	refresh := func() (sessionRef, bool) {
		c, err := p.Codec.VerifyRefresh(raw)
		if err != nil {
			return sessionRef{}, false
		}
		return sessionRef{id: c.SessionID, subject: c.Subject, expiry: c.ExpiresAt.Time()}, true
	}
	access := func() (sessionRef, bool) {
		c, err := p.Codec.VerifyAccess(raw)
		if err != nil {
			return sessionRef{}, false
		}
		// An access token carries its session's end. One minted before they did: the session logged in
		// before iat and lasts at most the refresh lifetime (if the policy's lifetime was lowered since, a
		// session that was never refreshed gets a record that may be dropped before it ends).
		expiry := c.SessionExpiry.Time()
		if c.SessionExpiry == 0 {
			expiry = c.IssuedAt.Time().Add(refreshLifetime(p.Spec()))
		}
		return sessionRef{id: c.SessionID, subject: c.Subject, expiry: expiry}, true
	}
	first, second := refresh, access
	if hint == "access_token" {
		first, second = access, refresh
	}
	if ref, ok := first(); ok {
		return ref, true
	}
	return second()
}

// revokeSession revokes a session durably, for logout and revocation. Revoking a revoked session succeeds.
func (s *Server) revokeSession(r *http.Request, p *Policy, ref sessionRef, reason string) *apiError {
	log := s.logger(p).WithValues("session", ref.id, "reason", reason)
	place, ok := placement(p, ref.id)
	if !ok {
		// Only a token this issuer signed gets here, and it never makes such an id: nothing to revoke.
		log.Info("Not revoking a session id without a shard")
		return nil
	}
	err := s.store.RevokeSession(r.Context(), revocation.RevokeSessionRequest{
		Place:     place,
		SessionID: ref.id,
		Subject:   ref.subject,
		Expiry:    ref.expiry,
		Reason:    reason,
		Now:       s.clock.Now(),
	})
	if err != nil {
		log.Error(err, "Revoking a session failed")
		if errors.Is(err, revocation.ErrShardFull) {
			return unavailable("the revocation cannot be recorded: the session's revocation shard is full; retry later")
		}
		return unavailable("the session could not be revoked now; retry later")
	}
	log.Info("Session revoked")
	return nil
}

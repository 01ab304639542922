package issuer

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// introspection is an RFC 7662 answer. An inactive token gets {"active":false} and nothing more, so the
// answer does not say why (invalid, expired, revoked, another policy's).
type introspection struct {
	Active    bool     `json:"active"`
	TokenType string   `json:"token_type,omitempty"` // access_token or refresh_token
	Scope     string   `json:"scope,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	ExpiresAt int64    `json:"exp,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	ID        string   `json:"jti,omitempty"`
	SessionID string   `json:"sid,omitempty"`
}

// serveIntrospect is RFC 7662 token introspection: POST {iss}/introspect, form-encoded token and optional
// token_type_hint. The caller presents a ServiceAccount token as Bearer credentials, reviewed for the
// policy's issuer as audience and listed in spec.introspection.serviceAccounts: 401 with
// WWW-Authenticate when it is missing or invalid, 403 when the ServiceAccount is not listed, 503 when it
// cannot be reviewed now, 429 slow_down when the client's address has had too many tokens refused (see
// Server.authenticate). A token whose session the store cannot tell valid is 503 as well.
func (s *Server) serveIntrospect(w http.ResponseWriter, r *http.Request) {
	resp, e := s.introspectRequest(r)
	respond(w, resp, e)
}

func (s *Server) introspectRequest(r *http.Request) (*introspection, *apiError) {
	p, e := s.policy(r)
	if e != nil {
		return nil, e
	}
	if e := s.authorizeIntrospection(r, p); e != nil {
		return nil, e
	}
	form, e := readForm(r)
	if e != nil {
		return nil, e
	}
	raw := form.Get("token")
	if raw == "" {
		return nil, badRequest(errInvalidRequest, "token is required")
	}
	v, err := s.introspect(p, raw, form.Get("token_type_hint"))
	if err != nil {
		// Fail closed: a token whose session cannot be told valid is not reported active, and not inactive
		// either (a resource server would drop a good session for a fault of the issuer's).
		s.logger(p).Error(err, "Introspection could not be decided")
		return nil, unavailable("session state is unavailable; retry later")
	}
	return &v, nil
}

// authorizeIntrospection admits a caller whose Bearer credentials are the token of a ServiceAccount the
// policy lists (RFC 7662 section 2.1 leaves the means to the server; errors follow RFC 6750 section 3).
func (s *Server) authorizeIntrospection(r *http.Request, p *Policy) *apiError {
	const realm = `Bearer realm="tokenwarden"`
	scheme, raw, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if raw = strings.TrimSpace(raw); !strings.EqualFold(scheme, "Bearer") || raw == "" {
		e := newError(http.StatusUnauthorized, errInvalidToken, "a ServiceAccount token is required as Bearer credentials")
		e.authenticate = realm
		return e
	}
	sa, throttled, err := s.authenticate(r, raw, p.Issuer)
	if throttled != nil {
		s.logger(p).V(1).Info("Introspection caller throttled by client address", "client", s.clientIP(r))
		return throttled
	}
	if errors.Is(err, ErrAuthenticatorUnavailable) {
		s.logger(p).Error(err, "Reviewing an introspection caller's token failed")
		return unavailable("the caller's token cannot be reviewed now; retry later")
	}
	if err != nil {
		s.logger(p).V(1).Info("Introspection caller refused", "client", s.clientIP(r), "reason", err.Error())
		e := newError(http.StatusUnauthorized, errInvalidToken, "the Bearer token is not a valid ServiceAccount token for this issuer")
		e.authenticate = realm + `, error="invalid_token"`
		return e
	}
	if !allowed(p.Spec().Introspection.ServiceAccounts, sa.Namespace, sa.Name) {
		s.logger(p).V(1).Info("Introspection caller not listed", "serviceAccount", sa.Namespace+"/"+sa.Name)
		e := newError(http.StatusForbidden, errInsufficientScope, "service account %s/%s may not introspect tokens of this policy", sa.Namespace, sa.Name)
		e.authenticate = realm + `, error="insufficient_scope"`
		return e
	}
	return nil
}

// introspect says whether raw is an active access or refresh token of p: it verifies now, and the store
// has seen no revocation of its session. The hint says which kind to try first. A token that verifies but
// whose session the store cannot tell valid (revocation.ErrUnavailable, or any error other than
// revocation.ErrRevoked) is an error, never an answer.
func (s *Server) introspect(p *Policy, raw, hint string) (introspection, error) {
	access := func() (introspection, bool, error) {
		c, err := p.Codec.VerifyAccess(raw)
		if err != nil {
			return introspection{}, false, nil
		}
		if ok, err := s.valid(p, c.SessionID, c.Subject, c.AuthTime.Time()); !ok || err != nil {
			return introspection{}, false, err
		}
		if ok, err := s.bound(p, c.Subject, c.Binding); !ok || err != nil {
			return introspection{}, false, err
		}
		return introspection{Active: true, TokenType: "access_token", Scope: c.Scope, ClientID: c.ClientID,
			Subject: c.Subject, Audience: c.Audience, Issuer: c.Issuer, ExpiresAt: int64(c.ExpiresAt),
			IssuedAt: int64(c.IssuedAt), ID: c.ID, SessionID: c.SessionID}, true, nil
	}
	refresh := func() (introspection, bool, error) {
		c, err := p.Codec.VerifyRefresh(raw)
		if err != nil {
			return introspection{}, false, nil
		}
		if ok, err := s.valid(p, c.SessionID, c.Subject, c.AuthTime.Time()); !ok || err != nil {
			return introspection{}, false, err
		}
		// A refresh token that has been rotated away can no longer be used (presenting it is reuse).
		if current, err := s.store.Current(p.State, c.SessionID, c.Generation); !current || err != nil {
			return introspection{}, false, err
		}
		if ok, err := s.bound(p, c.Subject, c.Binding); !ok || err != nil {
			return introspection{}, false, err
		}
		return introspection{Active: true, TokenType: "refresh_token", Scope: c.Scope, ClientID: c.ClientID,
			Subject: c.Subject, Audience: c.Audience, Issuer: c.Issuer, ExpiresAt: int64(c.ExpiresAt),
			IssuedAt: int64(c.IssuedAt), ID: c.ID, SessionID: c.SessionID}, true, nil
	}
	first, second := access, refresh
	if hint == "refresh_token" {
		first, second = refresh, access
	}
	for _, try := range []func() (introspection, bool, error){first, second} {
		if v, ok, err := try(); ok || err != nil {
			return v, err
		}
	}
	return introspection{Active: false}, nil
}

// valid asks the store whether a session of p may still be used: true, false (revoked), or an error when
// the store cannot tell.
func (s *Server) valid(p *Policy, sid, subject string, authTime time.Time) (bool, error) {
	switch err := s.store.Valid(p.State, sid, subject, authTime); {
	case err == nil:
		return true, nil
	case errors.Is(err, revocation.ErrRevoked):
		return false, nil
	default:
		return false, err
	}
}

// bound reports whether the identity a token's session was opened for still holds, or an error wrapping
// revocation.ErrUnavailable when the issuer cannot tell now (introspection then fails closed).
func (s *Server) bound(p *Policy, subject string, b *token.Binding) (bool, error) {
	why, e := s.checkBinding(p, subject, b)
	if e != nil {
		return false, fmt.Errorf("%w: %s", revocation.ErrUnavailable, e.description)
	}
	return why == nil, nil
}

package issuer

import (
	"errors"
	"net/http"
	"strings"

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
// cannot be reviewed now.
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
	v := s.introspect(p, raw, form.Get("token_type_hint"))
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
	sa, err := s.auth.Authenticate(r.Context(), raw, p.Issuer)
	if errors.Is(err, ErrAuthenticatorUnavailable) {
		s.logger(p).Error(err, "Reviewing an introspection caller's token failed")
		return unavailable("the caller's token cannot be reviewed now; retry later")
	}
	if err != nil {
		s.logger(p).V(1).Info("Introspection caller refused", "reason", err.Error())
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
// has seen no revocation of its session. The hint says which kind to try first.
func (s *Server) introspect(p *Policy, raw, hint string) introspection {
	access := func() (introspection, bool) {
		c, err := p.Codec.VerifyAccess(raw)
		if err != nil || s.store.Valid(p.State, c.SessionID, c.Subject, c.AuthTime.Time()) != nil || !s.bound(p, c.Subject, c.Binding) {
			return introspection{}, false
		}
		return introspection{Active: true, TokenType: "access_token", Scope: c.Scope, ClientID: c.ClientID,
			Subject: c.Subject, Audience: c.Audience, Issuer: c.Issuer, ExpiresAt: int64(c.ExpiresAt),
			IssuedAt: int64(c.IssuedAt), ID: c.ID, SessionID: c.SessionID}, true
	}
	refresh := func() (introspection, bool) {
		c, err := p.Codec.VerifyRefresh(raw)
		// A refresh token that has been rotated away can no longer be used (presenting it is reuse).
		if err != nil || s.store.Valid(p.State, c.SessionID, c.Subject, c.AuthTime.Time()) != nil ||
			!s.store.Current(p.State, c.SessionID, c.Generation) || !s.bound(p, c.Subject, c.Binding) {
			return introspection{}, false
		}
		return introspection{Active: true, TokenType: "refresh_token", Scope: c.Scope, ClientID: c.ClientID,
			Subject: c.Subject, Audience: c.Audience, Issuer: c.Issuer, ExpiresAt: int64(c.ExpiresAt),
			IssuedAt: int64(c.IssuedAt), ID: c.ID, SessionID: c.SessionID}, true
	}
	first, second := access, refresh
	if hint == "refresh_token" {
		first, second = refresh, access
	}
	if v, ok := first(); ok {
		return v
	}
	if v, ok := second(); ok {
		return v
	}
	return introspection{Active: false}
}

// bound reports whether the identity a token's session was opened for still holds; a token whose identity
// cannot be checked now is not active either.
func (s *Server) bound(p *Policy, subject string, b *token.Binding) bool {
	why, e := s.checkBinding(p, subject, b)
	return why == nil && e == nil
}

package issuer

import (
	"net/http"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// The JSON API serves apps written for the classic Flask JWT example: POST {iss}/login, /refresh and
// /logout with application/json bodies (415 otherwise). They answer with the token response of the token
// endpoint, and errors with the same {"error", "error_description"} body, except that a refused password
// or token is 401 rather than OAuth's 400 invalid_grant: that is what such apps test for.

type loginBody struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type refreshBody struct {
	RefreshToken string `json:"refresh_token"`
}

type logoutAnswer struct {
	Status string `json:"status"`
}

// jsonAPI turns the token endpoint's refusal of a credential into the JSON API's 401.
func jsonAPI(e *apiError) *apiError {
	if e == nil || e.code != errInvalidGrant {
		return e
	}
	c := *e
	c.status = http.StatusUnauthorized
	return &c
}

func (s *Server) serveLogin(w http.ResponseWriter, r *http.Request) {
	if b := s.browser(r); b != nil {
		s.browserLogin(w, r, b)
		return
	}
	resp, e := s.jsonLogin(r)
	respond(w, resp, jsonAPI(e))
}

func (s *Server) jsonLogin(r *http.Request) (*tokenResponse, *apiError) {
	p, e := s.policy(r)
	if e != nil {
		return nil, e
	}
	var body loginBody
	if e := readJSON(r, &body); e != nil {
		return nil, e
	}
	return s.passwordLogin(r, p, body.Username, body.Password, "")
}

func (s *Server) serveRefresh(w http.ResponseWriter, r *http.Request) {
	if b := s.browser(r); b != nil {
		s.browserRefresh(w, r, b)
		return
	}
	resp, e := s.jsonRefresh(r)
	respond(w, resp, jsonAPI(e))
}

func (s *Server) jsonRefresh(r *http.Request) (*tokenResponse, *apiError) {
	p, e := s.policy(r)
	if e != nil {
		return nil, e
	}
	var body refreshBody
	if e := readJSON(r, &body); e != nil {
		return nil, e
	}
	if body.RefreshToken == "" {
		return nil, badRequest(errInvalidRequest, "refresh_token is required")
	}
	return s.refresh(r, p, body.RefreshToken, "")
}

// serveLogout revokes the session of a refresh token: 200 {"status":"logged out"}, also when the session
// was revoked already (logging out twice is not an error); 401 for a token that does not verify.
func (s *Server) serveLogout(w http.ResponseWriter, r *http.Request) {
	if b := s.browser(r); b != nil {
		s.browserLogout(w, r, b)
		return
	}
	e := s.jsonLogout(r)
	respond(w, logoutAnswer{Status: "logged out"}, jsonAPI(e))
}

func (s *Server) jsonLogout(r *http.Request) *apiError {
	p, e := s.policy(r)
	if e != nil {
		return e
	}
	var body refreshBody
	if e := readJSON(r, &body); e != nil {
		return e
	}
	if body.RefreshToken == "" {
		return badRequest(errInvalidRequest, "refresh_token is required")
	}
	return s.logout(r, p, body.RefreshToken)
}

// logout revokes the session of the refresh token raw.
func (s *Server) logout(r *http.Request, p *Policy, raw string) *apiError {
	claims, err := p.Codec.VerifyRefresh(raw)
	if err != nil {
		s.logger(p).V(1).Info("Logout with a refresh token that does not verify", "reason", err.Error())
		return badRequest(errInvalidGrant, "the refresh token is invalid or expired")
	}
	return s.revokeSession(r, p, sessionRef{id: claims.SessionID, subject: claims.Subject, expiry: claims.ExpiresAt.Time()},
		revocation.ReasonLogout)
}

package issuer

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// Grant types and token type identifiers (RFC 6749, RFC 8693 section 3).
const (
	grantPassword        = "password"
	grantRefreshToken    = "refresh_token"
	grantTokenExchange   = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
)

// maxClientID bounds the client_id a client may name; it goes into every token of the session.
const maxClientID = 255

// tokenResponse is a successful token response (RFC 6749 section 5.1, RFC 8693 section 2.2.1), and the
// body the JSON API's login and refresh answer with.
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	RefreshToken    string `json:"refresh_token,omitempty"`
	Scope           string `json:"scope,omitempty"`
}

// respond writes v as a 200 answer that must not be cached, or e.
func respond(w http.ResponseWriter, v any, e *apiError) {
	if e != nil {
		writeError(w, e)
		return
	}
	noStore(w.Header())
	writeJSON(w, http.StatusOK, v)
}

// serveToken is the OAuth 2.0 token endpoint: POST {iss}/token, form-encoded.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	resp, e := s.token(r)
	respond(w, resp, e)
}

func (s *Server) token(r *http.Request) (*tokenResponse, *apiError) {
	p, e := s.policy(r)
	if e != nil {
		return nil, e
	}
	form, e := readForm(r)
	if e != nil {
		return nil, e
	}
	client, e := clientID(r, form)
	if e != nil {
		return nil, e
	}
	grant := form.Get("grant_type")
	switch grant {
	case grantPassword, grantRefreshToken, grantTokenExchange:
	case "":
		return nil, badRequest(errInvalidRequest, "grant_type is required")
	default:
		return nil, badRequest(errUnsupportedGrantType, "grant type %.64q is not supported", grant)
	}
	if form.Get("scope") != "" {
		// Policies define no scopes, so a requested scope can only be refused (RFC 6749 section 3.3; for a
		// refresh, section 6: no scope beyond the none originally granted).
		return nil, badRequest(errInvalidScope, "this policy grants no scopes")
	}
	switch grant {
	case grantPassword:
		return s.passwordLogin(r, p, form.Get("username"), form.Get("password"), client)
	case grantRefreshToken:
		if form.Get("refresh_token") == "" {
			return nil, badRequest(errInvalidRequest, "refresh_token is required")
		}
		return s.refresh(r, p, form.Get("refresh_token"), client)
	}
	return s.exchange(r, p, form, client)
}

// clientID is the client a token request names: client_id in the body, or the user of HTTP Basic
// authentication with an empty password, which is how golang.org/x/oauth2 and others send a client that
// has no secret. Every client is public (token_endpoint_auth_methods_supported is ["none"]): there is no
// secret to check a presented one against, so a request carrying one fails client authentication
// (invalid_client) rather than being taken as authenticated.
func clientID(r *http.Request, form url.Values) (string, *apiError) {
	id := form.Get("client_id")
	if form.Get("client_secret") != "" {
		return "", invalidClient()
	}
	if r.Header.Get("Authorization") != "" {
		user, pass, ok := r.BasicAuth()
		if !ok {
			return "", invalidClient()
		}
		// RFC 6749 section 2.3.1: both are form-urlencoded before the Basic encoding.
		user, err1 := url.QueryUnescape(user)
		pass, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil || pass != "" {
			return "", invalidClient()
		}
		if id != "" && user != "" && id != user {
			return "", badRequest(errInvalidRequest, "client_id and the Authorization header name different clients")
		}
		if user != "" {
			id = user
		}
	}
	if len(id) > maxClientID || !isVSChars(id) {
		return "", badRequest(errInvalidRequest, "client_id must be at most %d printable ASCII characters", maxClientID)
	}
	return id, nil
}

func invalidClient() *apiError {
	e := newError(http.StatusUnauthorized, errInvalidClient, "clients are public: client authentication is not accepted")
	e.authenticate = `Basic realm="tokenwarden"`
	return e
}

// isVSChars reports whether s is RFC 6749 appendix A's *VSCHAR: printable ASCII and space.
func isVSChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// maxUsername bounds the usernames a password login may name: a Secret data key is at most 253 bytes, so no
// user has a longer one, and nothing longer is ever looked up or counted.
const maxUsername = 256

// passwordLogin is the password grant and the JSON API's login. Wrong passwords and unknown users get the
// same answer, after the same work.
func (s *Server) passwordLogin(r *http.Request, p *Policy, username, password, client string) (resp *tokenResponse, e *apiError) {
	switch {
	case p.Users == nil && p.Spec().Login.PasswordSecretName != "":
		return nil, badRequest(errUnsupportedGrantType, "password login is off for this policy until its users Secret is fixed (its LoginReady condition says why)")
	case p.Users == nil:
		return nil, badRequest(errUnsupportedGrantType, "password login is not enabled for this policy")
	}
	if username == "" || password == "" {
		return nil, badRequest(errInvalidRequest, "username and password are required")
	}
	if len(username) > maxUsername {
		return nil, badRequest(errInvalidRequest, "username must be at most %d bytes", maxUsername)
	}
	defer func() { s.metrics.logins.WithLabelValues(grantPassword, loginOutcome(e)).Inc() }()
	// Both buckets admit the attempt before the password check, which also keeps bcrypt from taking every
	// CPU; only a wrong password is charged to them. A username is counted per users Secret: policies
	// that read the same Secret share its users' budgets.
	ip := s.clientIP(r)
	byIP, e := s.admit(r, s.byIP, ip)
	if e != nil {
		s.logger(p).V(1).Info("Password attempt throttled by client address", "client", ip)
		return nil, e
	}
	byUser, e := s.admit(r, s.byUser, p.Key.Namespace+"/"+p.Spec().Login.PasswordSecretName+"\x00"+username)
	if e != nil {
		byIP.end(false, s.clock.Now())
		s.logger(p).V(1).Info("Password attempt throttled by username", "client", ip)
		return nil, e
	}
	ok := p.Users.Check(username, password)
	now := s.clock.Now()
	byUser.end(!ok, now)
	byIP.end(!ok, now)
	if !ok {
		// No username in the log: people type passwords into the username field.
		s.logger(p).V(1).Info("Password login refused", "client", ip)
		return nil, badRequest(errInvalidGrant, "invalid username or password")
	}
	fp, _ := p.Users.Fingerprint(username)
	return s.startSession(p, username, client, &token.Binding{Password: fp})
}

// authenticate reviews a ServiceAccount token that the request's client presents for audience. A review
// the Authenticator remembers as successful is answered at once; any other is admitted by the client
// address's throttle first (throttled is its 429 when the address has no failure left), and a refusal of
// the token costs the address one failure, so that garbage tokens cannot turn into TokenReviews faster
// than the address's budget.
func (s *Server) authenticate(r *http.Request, token, audience string) (sa ServiceAccount, throttled *apiError, err error) {
	if rem, ok := s.auth.(rememberer); ok {
		if sa, ok := rem.Remembered(token, audience); ok {
			return sa, nil, nil
		}
	}
	tk, throttled := s.admit(r, s.byIP, s.clientIP(r))
	if throttled != nil {
		return ServiceAccount{}, throttled, nil
	}
	sa, err = s.auth.Authenticate(r.Context(), token, audience)
	tk.end(err != nil && !errors.Is(err, ErrAuthenticatorUnavailable), s.clock.Now())
	return sa, nil, err
}

// exchange is the RFC 8693 token-exchange grant: a Kubernetes ServiceAccount token, reviewed for the
// policy's issuer as audience, for tokens of a new session whose subject is the ServiceAccount.
//
// Every refusal of the subject token, invalid or not allowed by the policy, is invalid_request:
// RFC 8693 section 2.2.2 says so for a subject token that is "invalid for any reason" or "unacceptable
// based on policy". (unauthorized_client would speak of the client, which is not authenticated here, and
// invalid_grant of RFC 6749's own grants.)
func (s *Server) exchange(r *http.Request, p *Policy, form url.Values, client string) (resp *tokenResponse, e *apiError) {
	spec := p.Spec()
	if len(spec.Login.ServiceAccounts) == 0 {
		return nil, badRequest(errUnsupportedGrantType, "token exchange is not enabled for this policy")
	}
	subjectToken, subjectType := form.Get("subject_token"), form.Get("subject_token_type")
	switch requested := form.Get("requested_token_type"); {
	case subjectToken == "" || subjectType == "":
		return nil, badRequest(errInvalidRequest, "subject_token and subject_token_type are required")
	case subjectType != tokenTypeJWT:
		return nil, badRequest(errInvalidRequest, "subject_token_type must be %s: a Kubernetes ServiceAccount token", tokenTypeJWT)
	case form.Get("actor_token") != "" || form.Get("actor_token_type") != "":
		return nil, badRequest(errInvalidRequest, "delegation (actor_token) is not supported")
	case requested != "" && requested != tokenTypeAccessToken:
		return nil, badRequest(errInvalidRequest, "requested_token_type must be %s", tokenTypeAccessToken)
	}
	// Access tokens always name every audience of the policy; a target outside them cannot be served.
	for _, target := range slices.Concat(form["audience"], form["resource"]) {
		if target != "" && !slices.Contains(spec.Audiences, target) {
			return nil, badRequest(errInvalidTarget, "%.128q is not an audience of this policy", target)
		}
	}
	defer func() { s.metrics.logins.WithLabelValues(grantTokenExchange, loginOutcome(e)).Inc() }()
	ip := s.clientIP(r)
	sa, throttled, err := s.authenticate(r, subjectToken, p.Issuer)
	if throttled != nil {
		s.logger(p).V(1).Info("Token exchange throttled by client address", "client", ip)
		return nil, throttled
	}
	if errors.Is(err, ErrAuthenticatorUnavailable) {
		s.logger(p).Error(err, "Reviewing a subject token failed")
		return nil, unavailable("the subject token cannot be reviewed now; retry later")
	}
	if err != nil {
		s.logger(p).V(1).Info("Subject token refused", "client", ip, "reason", err.Error())
		return nil, badRequest(errInvalidRequest, "subject_token is not a valid ServiceAccount token for this issuer")
	}
	if !allowed(spec.Login.ServiceAccounts, sa.Namespace, sa.Name) {
		s.logger(p).V(1).Info("Token exchange refused: the ServiceAccount is not listed", "serviceAccount", sa.Namespace+"/"+sa.Name)
		return nil, badRequest(errInvalidRequest, "service account %s/%s may not obtain tokens of this policy", sa.Namespace, sa.Name)
	}
	resp, e = s.startSession(p, serviceAccountSubject(sa.Namespace, sa.Name), client, &token.Binding{ServiceAccountUID: sa.UID, PodUID: sa.PodUID})
	if resp != nil {
		resp.IssuedTokenType = tokenTypeAccessToken
	}
	return resp, e
}

// allowed reports whether refs list the ServiceAccount ns/name.
func allowed(refs []v1alpha1.ServiceAccountRef, ns, name string) bool {
	return slices.ContainsFunc(refs, func(ref v1alpha1.ServiceAccountRef) bool { return ref.Matches(ns, name) })
}

// serviceAccountSubject is the sub of a ServiceAccount's tokens: its Kubernetes username. No password user
// can have it: Secret data keys, the usernames, cannot hold ':'.
func serviceAccountSubject(ns, name string) string {
	return "system:serviceaccount:" + ns + ":" + name
}

// startSession logs subject in, bound to the identity it proved: a new session and generation 0 of its
// tokens. Nothing is written to the store; a session gets a record when it is first refreshed or revoked.
func (s *Server) startSession(p *Policy, subject, client string, binding *token.Binding) (*tokenResponse, *apiError) {
	now := s.clock.Now().Truncate(time.Second) // tokens carry whole seconds
	sess := token.Session{ID: s.newSessionID(p), Subject: subject, ClientID: client, AuthTime: now,
		Expiry: now.Add(refreshLifetime(p.Spec())), Binding: binding}
	resp, e := s.issue(p, sess, 0, now)
	if e == nil {
		s.logger(p).V(1).Info("Session started", "session", sess.ID, "subject", subject)
	}
	return resp, e
}

// refresh redeems a refresh token for the next generation of its session: the refresh grant and the JSON
// API's refresh. The store commits the new generation before any token is minted.
func (s *Server) refresh(r *http.Request, p *Policy, raw, client string) (*tokenResponse, *apiError) {
	claims, err := p.Codec.VerifyRefresh(raw)
	if err != nil {
		s.metrics.refreshes.WithLabelValues(refreshInvalid).Inc()
		s.logger(p).V(1).Info("Refresh token refused", "reason", err.Error())
		return nil, badRequest(errInvalidGrant, "the refresh token is invalid or expired")
	}
	log := s.logger(p).WithValues("session", claims.SessionID, "generation", claims.Generation)
	if client != "" && claims.ClientID != "" && client != claims.ClientID {
		// RFC 6749 section 6: a refresh token is bound to the client it was issued to.
		s.metrics.refreshes.WithLabelValues(refreshInvalid).Inc()
		log.V(1).Info("Refresh token presented by another client")
		return nil, badRequest(errInvalidGrant, "the refresh token was issued to another client")
	}
	place, ok := placement(p, claims.SessionID)
	if !ok {
		s.metrics.refreshes.WithLabelValues(refreshInvalid).Inc()
		log.V(1).Info("Refresh token names a session id without a shard")
		return nil, badRequest(errInvalidGrant, "the refresh token is invalid or expired")
	}
	switch why, e := s.checkBinding(p, claims.Subject, claims.Binding); {
	case e != nil:
		s.metrics.refreshes.WithLabelValues(refreshUnavailable).Inc()
		return nil, e
	case why != nil:
		return nil, s.endSession(r, p, claims, why)
	}
	spec := p.Spec()
	res, err := s.store.Refresh(r.Context(), revocation.RefreshRequest{
		Place:      place,
		SessionID:  claims.SessionID,
		Subject:    claims.Subject,
		Generation: claims.Generation,
		AuthTime:   claims.AuthTime.Time(),
		Expiry:     claims.ExpiresAt.Time(),
		Idle:       idleTimeout(spec),
		Grace:      spec.RefreshToken.ReuseGracePeriod.Duration,
		Now:        s.clock.Now(),
	})
	outcome := refreshOutcome(res, err)
	s.metrics.refreshes.WithLabelValues(outcome).Inc()
	switch outcome {
	case refreshOK, refreshGrace:
		// A grace duplicate mints the successor again at its first issue time: the same tokens.
		return s.issue(p, claims.Session(), res.Generation, res.IssuedAt)
	case refreshReuse:
		s.reused(p, claims, log)
	case refreshUnavailable:
		log.Error(err, "Refresh could not be decided")
	default:
		log.V(1).Info("Refresh refused", "reason", err.Error())
	}
	return nil, storeError(err)
}

// reused reports a refresh token presented again after rotation, which revoked its session: a stolen
// token, or a client that lost a response. The Event names the session, never the token.
func (s *Server) reused(p *Policy, claims *token.RefreshClaims, log logr.Logger) {
	s.metrics.reuse.WithLabelValues(p.Key.Namespace, p.Key.Name).Inc()
	log.Info("Refresh token reused after rotation; the session is revoked", "subject", claims.Subject)
	if s.events != nil {
		s.events.Eventf(p.Object, nil, corev1.EventTypeWarning, v1alpha1.EventRefreshTokenReuse, "RevokeSession",
			"Refresh token generation %d of session %s was presented again after rotation; the session is revoked",
			claims.Generation, claims.SessionID)
	}
}

// issue mints generation gen of session sess at iat. The same arguments give the same tokens, so a grace
// duplicate gets a byte-identical answer; expires_in is counted from iat rather than from now for the
// same reason (a duplicate may overstate it by at most the grace period).
func (s *Server) issue(p *Policy, sess token.Session, gen uint64, iat time.Time) (*tokenResponse, *apiError) {
	access, claims, err := p.Codec.MintAccess(sess, gen, iat)
	var refresh string
	if err == nil {
		refresh, _, err = p.Codec.MintRefresh(sess, gen, iat)
	}
	switch {
	case errors.Is(err, token.ErrExpired):
		return nil, badRequest(errInvalidGrant, "the session has expired")
	case err != nil:
		s.logger(p).Error(err, "Minting tokens failed", "session", sess.ID)
		return nil, newError(http.StatusInternalServerError, errServerError, "tokens could not be issued")
	}
	return &tokenResponse{AccessToken: access, TokenType: "Bearer", ExpiresIn: int64(claims.ExpiresAt - claims.IssuedAt),
		RefreshToken: refresh, Scope: sess.Scope}, nil
}

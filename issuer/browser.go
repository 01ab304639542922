package issuer

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// The browser mode of a policy (spec.browser) serves single-page apps through the JSON API without ever
// handing the refresh token to the page's scripts:
//
//   - /login puts the refresh token in an HttpOnly cookie scoped to the policy's issuer path and leaves
//     it out of the body; /refresh without a token in the body redeems the cookie and rotates it; /logout
//     without one revokes the cookie's session and clears the cookie.
//   - Pages of the allowed origins may call these three endpoints across origins: their requests get
//     Access-Control-Allow-Origin (the exact origin) and Access-Control-Allow-Credentials, and an OPTIONS
//     preflight is answered without touching any state. Every answer varies by Origin.
//   - A request that the cookie authenticates (or a login from a browser, which sets it) must carry an
//     allowed Origin and the application/json content type, which no form can send and which makes a
//     browser ask with a preflight first; anything else is 403 access_denied and changes nothing.
//
// Requests that carry the refresh token in the body are served as without the browser mode (CORS headers
// aside), and so is the token endpoint.

// refreshCookieName is the name of the refresh cookie without its prefix.
const refreshCookieName = "tokenwarden-refresh"

// preflightMaxAge is how long a browser may reuse a preflight answer (Chromium caps it at 2 hours).
const preflightMaxAge = 10 * time.Minute

// loopbackHTTPOrigin matches the origins for which a policy may turn Secure off: the CRD's rule, checked
// again here because the issuer must not depend on the API server having validated the object.
var loopbackHTTPOrigin = regexp.MustCompile(`^http://(localhost|127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|\[::1\])(:[0-9]{1,5})?$`)

// browser is the browser mode of one policy, as this server applies it.
type browser struct {
	policy  *Policy
	origins []v1alpha1.BrowserOrigin
	// cookie holds the refresh cookie's name and attributes; each answer sets its value and Max-Age.
	cookie http.Cookie
}

// policyGeneration names one generation of a policy.
type policyGeneration struct {
	key        types.NamespacedName
	generation int64
}

// browser returns the browser mode of the policy the request names, or nil when that policy does not
// exist (the handlers then answer as they always did) or has no browser mode.
func (s *Server) browser(r *http.Request) *browser {
	p, ok := s.policies.Get(r.PathValue("namespace"), r.PathValue("policy"))
	if !ok {
		return nil
	}
	return s.browserOf(p)
}

// browserOf returns p's browser mode, or nil when it has none.
func (s *Server) browserOf(p *Policy) *browser {
	spec := p.Spec().Browser
	if spec == nil || len(spec.AllowedOrigins) == 0 {
		return nil
	}
	path := "/"
	if u, err := url.Parse(p.Issuer); err == nil && u.EscapedPath() != "" {
		path = u.EscapedPath()
	}
	secure := s.cookieSecure(p, spec)
	name := refreshCookieName
	switch {
	case secure && path == "/":
		name = "__Host-" + name // Secure, Path=/, no Domain: no other host can set or shadow it
	case secure:
		name = "__Secure-" + name
	}
	sameSite := http.SameSiteStrictMode
	if spec.Cookie.SameSite == v1alpha1.SameSiteLax {
		sameSite = http.SameSiteLaxMode
	}
	return &browser{policy: p, origins: spec.AllowedOrigins,
		cookie: http.Cookie{Name: name, Path: path, Secure: secure, HttpOnly: true, SameSite: sameSite}}
}

// cookieSecure decides the Secure attribute of p's refresh cookie. Secure: false is honoured only when
// the server runs in the dev mode and every allowed origin is a loopback http origin; otherwise the cookie
// is Secure anyway, which the log says once per generation of the policy. (Refusing the browser mode
// instead would leave apps without a way to keep the refresh token from scripts; a Secure cookie is at
// worst one that a browser does not keep over plain http, which fails safe.)
func (s *Server) cookieSecure(p *Policy, spec *v1alpha1.BrowserSpec) bool {
	if spec.Cookie.Secure == nil || *spec.Cookie.Secure {
		return true
	}
	var why string
	switch {
	case !s.insecureCookies:
		why = "only the dev mode (make run) serves a refresh cookie without Secure"
	case !slices.ContainsFunc(spec.AllowedOrigins, func(o v1alpha1.BrowserOrigin) bool { return !loopbackHTTPOrigin.MatchString(string(o)) }):
		return false
	default:
		why = "an allowed origin is not a loopback http origin"
	}
	gen := policyGeneration{key: p.Key, generation: p.Object.Generation}
	if _, told := s.secureForced.LoadOrStore(gen, struct{}{}); !told {
		s.logger(p).Info("The policy asks for a refresh cookie without Secure; serving it Secure", "reason", why)
	}
	return true
}

// allowedOrigin returns the request's Origin and whether it is one of the allowed origins. A missing,
// repeated or opaque ("null") Origin is never allowed.
func (b *browser) allowedOrigin(r *http.Request) (string, bool) {
	values := r.Header.Values("Origin")
	if len(values) != 1 || values[0] == "null" {
		return "", false
	}
	return values[0], slices.Contains(b.origins, v1alpha1.BrowserOrigin(values[0]))
}

// cors writes the CORS headers of an answer to r: the exact origin with credentials when it is allowed,
// none otherwise, and in either case Vary: Origin, since the answer depends on it.
func (b *browser) cors(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	h.Add("Vary", "Origin")
	origin, ok := b.allowedOrigin(r)
	if !ok {
		return false
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Set("Access-Control-Expose-Headers", "Retry-After")
	return true
}

// admit is the cross-site request forgery check of a request that uses or sets the refresh cookie: an
// allowed Origin, and the application/json content type, which a form cannot send and for which a
// browser sends a preflight first (answered only for allowed origins).
func (b *browser) admit(r *http.Request) *apiError {
	if _, ok := b.allowedOrigin(r); !ok {
		return newError(http.StatusForbidden, errAccessDenied,
			"the refresh cookie is accepted only from the policy's allowed origins (spec.browser.allowedOrigins)")
	}
	if !hasMediaType(r, "application/json") {
		return notJSON()
	}
	return nil
}

// notJSON refuses a browser request that is not application/json.
func notJSON() *apiError {
	return newError(http.StatusForbidden, errAccessDenied, "a request that uses the refresh cookie must be application/json")
}

// refreshCookie returns the value of the request's refresh cookie, "" when it has none. Two cookies of
// that name mean that something other than this issuer set one (a sibling host can, for a name without
// the __Host- prefix): neither is used.
func (b *browser) refreshCookie(r *http.Request) (string, *apiError) {
	cookies := r.CookiesNamed(b.cookie.Name)
	switch len(cookies) {
	case 0:
		return "", nil
	case 1:
		return cookies[0].Value, nil
	}
	return "", badRequest(errInvalidRequest, "the request carries more than one %s cookie", b.cookie.Name)
}

// setRefreshCookie moves the refresh token of resp into the refresh cookie, whose Max-Age is the token's
// remaining life.
func (s *Server) setRefreshCookie(w http.ResponseWriter, b *browser, resp *tokenResponse) {
	c := b.cookie
	c.Value, c.MaxAge = resp.RefreshToken, 1
	// The token was minted a moment ago by this server: its expiry is read without verifying it again.
	var claims token.RefreshClaims
	if _, _, err := jwt.NewParser().ParseUnverified(resp.RefreshToken, &claims); err == nil {
		c.MaxAge = max(1, int(claims.ExpiresAt.Time().Sub(s.clock.Now())/time.Second))
	}
	http.SetCookie(w, &c)
	resp.RefreshToken = ""
}

// clearRefreshCookie tells the browser to drop the refresh cookie: the same name, Path and attributes
// with Max-Age=0.
func clearRefreshCookie(w http.ResponseWriter, b *browser) {
	c := b.cookie
	c.MaxAge = -1 // net/http writes Max-Age=0
	http.SetCookie(w, &c)
}

// browserLogin is POST {iss}/login of a policy in browser mode: a password login whose refresh token goes
// into the cookie. A request with an Origin (every browser sends one with a POST) must pass admit, so that
// no other page can log the browser in; one without (a client outside a browser) gets the cookie too.
func (s *Server) browserLogin(w http.ResponseWriter, r *http.Request, b *browser) {
	b.cors(w, r)
	if r.Header.Get("Origin") != "" {
		if e := b.admit(r); e != nil {
			s.refused(b, r, e)
			writeError(w, e)
			return
		}
	}
	var body loginBody
	if e := readJSON(r, &body); e != nil {
		writeError(w, e)
		return
	}
	resp, e := s.passwordLogin(r, b.policy, body.Username, body.Password, "")
	if e != nil {
		writeError(w, jsonAPI(e))
		return
	}
	s.setRefreshCookie(w, b, resp)
	respond(w, resp, nil)
}

// browserRefresh is POST {iss}/refresh of a policy in browser mode. A refresh token in the body is
// redeemed as without the browser mode; otherwise the cookie's, after admit, and the successor replaces
// it in the cookie. The store's rules are the same either way: rotation, reuse detection (an old cookie
// value presented again revokes the session) and the grace period.
func (s *Server) browserRefresh(w http.ResponseWriter, r *http.Request, b *browser) {
	b.cors(w, r)
	raw, e := s.browserToken(r, b)
	if e != nil {
		writeError(w, e)
		return
	}
	resp, e := s.refresh(r, b.policy, raw.token, "")
	if e == nil && !raw.inBody {
		s.setRefreshCookie(w, b, resp)
	}
	respond(w, resp, jsonAPI(e))
}

// browserLogout is POST {iss}/logout of a policy in browser mode: a refresh token in the body is logged
// out as without the browser mode; otherwise the cookie's session, after admit, and the cookie is
// cleared, also when its token no longer verifies. It is kept when the revocation could not be recorded
// (503), so that the page can retry.
func (s *Server) browserLogout(w http.ResponseWriter, r *http.Request, b *browser) {
	b.cors(w, r)
	raw, e := s.browserToken(r, b)
	if e != nil {
		writeError(w, e)
		return
	}
	e = s.logout(r, b.policy, raw.token)
	if !raw.inBody && (e == nil || e.code == errInvalidGrant) {
		clearRefreshCookie(w, b)
	}
	respond(w, logoutAnswer{Status: "logged out"}, jsonAPI(e))
}

// presented is the refresh token a refresh or logout request presents.
type presented struct {
	token  string
	inBody bool // false: the refresh cookie's
}

// browserToken reads the refresh token of a refresh or logout request: the body's when it has one,
// else the cookie's, once the request has passed admit. A request that carries the cookie but is not
// JSON (a form, text/plain) is refused before its body is read.
func (s *Server) browserToken(r *http.Request, b *browser) (presented, *apiError) {
	cookie, e := b.refreshCookie(r)
	if e != nil {
		return presented{}, e
	}
	if cookie != "" && !hasMediaType(r, "application/json") {
		e := notJSON()
		s.refused(b, r, e)
		return presented{}, e
	}
	var body refreshBody
	if e := readJSON(r, &body); e != nil {
		return presented{}, e
	}
	if body.RefreshToken != "" {
		return presented{token: body.RefreshToken, inBody: true}, nil
	}
	if cookie == "" {
		return presented{}, badRequest(errInvalidRequest, "refresh_token is required, in the body or as the %s cookie", b.cookie.Name)
	}
	if e := b.admit(r); e != nil {
		s.refused(b, r, e)
		return presented{}, e
	}
	return presented{token: cookie}, nil
}

// refused logs a request that failed admit, by its origin: never the cookie.
func (s *Server) refused(b *browser, r *http.Request, e *apiError) {
	origin := r.Header.Get("Origin")
	if len(origin) > 256 {
		origin = origin[:256]
	}
	s.logger(b.policy).V(1).Info("Browser request refused", "origin", origin, "client", s.clientIP(r), "reason", e.description)
}

// servePreflight answers the CORS preflight (OPTIONS) of the JSON API: for a policy in browser mode, 204
// with the CORS headers when the origin is allowed and without them otherwise; for a policy without, 405.
// Nothing is read or written but the headers.
func (s *Server) servePreflight(w http.ResponseWriter, r *http.Request) {
	p, e := s.policy(r)
	if e != nil {
		writeError(w, e)
		return
	}
	b := s.browserOf(p)
	if b == nil {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, newError(http.StatusMethodNotAllowed, errInvalidRequest, "this policy's JSON API has no browser mode (spec.browser)"))
		return
	}
	if b.cors(w, r) {
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", http.MethodPost)
		h.Set("Access-Control-Allow-Headers", "Content-Type")
		h.Set("Access-Control-Max-Age", strconv.Itoa(int(preflightMaxAge/time.Second)))
	}
	w.WriteHeader(http.StatusNoContent)
}

// browserMetadata describes the browser mode in the discovery documents: where a page logs in, refreshes
// and logs out, and the refresh cookie it never sees.
type browserMetadata struct {
	LoginEndpoint   string `json:"login_endpoint"`
	RefreshEndpoint string `json:"refresh_endpoint"`
	LogoutEndpoint  string `json:"logout_endpoint"`
	// RequestContentType is what every request must be: it makes a browser send a preflight first.
	RequestContentType string `json:"request_content_type"`
	// Credentials is what a page's fetch must ask for, so that the browser sends and keeps the cookie.
	Credentials    string `json:"credentials"`
	CookieName     string `json:"refresh_cookie_name"`
	CookiePath     string `json:"refresh_cookie_path"`
	CookieSameSite string `json:"refresh_cookie_same_site"`
	CookieSecure   bool   `json:"refresh_cookie_secure"`
	CookieHTTPOnly bool   `json:"refresh_cookie_http_only"`
}

// metadata is the discovery member of b; nil when b is.
func (b *browser) metadata() *browserMetadata {
	if b == nil {
		return nil
	}
	sameSite := "Strict"
	if b.cookie.SameSite == http.SameSiteLaxMode {
		sameSite = "Lax"
	}
	iss := b.policy.Issuer
	return &browserMetadata{LoginEndpoint: iss + "/login", RefreshEndpoint: iss + "/refresh", LogoutEndpoint: iss + "/logout",
		RequestContentType: "application/json", Credentials: "include", CookieName: b.cookie.Name, CookiePath: b.cookie.Path,
		CookieSameSite: sameSite, CookieSecure: b.cookie.Secure, CookieHTTPOnly: true}
}

package issuer_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/issuer"
)

// appOrigin is the origin the browser-mode fixtures allow.
const appOrigin = "https://app.example.com"

// secureCookie is the refresh cookie's name when it is Secure and scoped to a policy's path.
const secureCookie = "__Secure-tokenwarden-refresh"

func browserSpec(origins ...string) *v1alpha1.BrowserSpec {
	b := &v1alpha1.BrowserSpec{}
	for _, o := range origins {
		b.AllowedOrigins = append(b.AllowedOrigins, v1alpha1.BrowserOrigin(o))
	}
	return b
}

func newBrowserFixture(t *testing.T, o options) *fixture {
	t.Helper()
	if o.browser == nil {
		o.browser = browserSpec(appOrigin)
	}
	return newFixture(t, o)
}

// pageRequest is what a page's fetch (or a form, or another client) sends to the JSON API.
type pageRequest struct {
	origin      string // "" sends no Origin
	contentType string
	body        string
	cookies     []string // values of the refresh cookie, each sent as name=value
	cookieName  string   // default secureCookie
}

// page sends req to the JSON API endpoint of the main policy.
func (f *fixture) page(endpoint string, req pageRequest) response {
	f.t.Helper()
	h := http.Header{}
	if req.origin != "" {
		h.Set("Origin", req.origin)
	}
	name := req.cookieName
	if name == "" {
		name = secureCookie
	}
	var pairs []string
	for _, v := range req.cookies {
		pairs = append(pairs, name+"="+v)
	}
	if len(pairs) > 0 {
		h.Set("Cookie", strings.Join(pairs, "; "))
	}
	return f.do(http.MethodPost, f.policy.Issuer+"/"+endpoint, req.contentType, strings.NewReader(req.body), h)
}

// fetch is a page of appOrigin calling endpoint with the cookie, as the browser mode expects.
func (f *fixture) fetch(endpoint string, cookie string) response {
	f.t.Helper()
	req := pageRequest{origin: appOrigin, contentType: "application/json", body: "{}"}
	if cookie != "" {
		req.cookies = []string{cookie}
	}
	return f.page(endpoint, req)
}

// pageLogin logs alice in from a page of appOrigin and returns the answer and the refresh cookie's value.
func (f *fixture) pageLogin() (answer, string) {
	f.t.Helper()
	r := f.page("login", pageRequest{origin: appOrigin, contentType: "application/json", body: `{"username":"alice","password":"wonderland"}`})
	if r.status != http.StatusOK {
		f.t.Fatalf("login: got %d %s; want 200", r.status, r.body)
	}
	return r.answer(f.t), setCookie(f.t, r, secureCookie).Value
}

// pageRefresh refreshes with the cookie from a page of appOrigin, fails the test unless it succeeds, and
// returns the new cookie's value.
func (f *fixture) pageRefresh(cookie string) string {
	f.t.Helper()
	r := f.fetch("refresh", cookie)
	if r.status != http.StatusOK {
		f.t.Fatalf("refresh with the cookie: got %d %s; want 200", r.status, r.body)
	}
	return setCookie(f.t, r, secureCookie).Value
}

// setCookie returns the one Set-Cookie of r, which must be named name.
func setCookie(t testing.TB, r response, name string) *http.Cookie {
	t.Helper()
	lines := r.header.Values("Set-Cookie")
	if len(lines) != 1 {
		t.Fatalf("got %d Set-Cookie headers %q; want 1", len(lines), lines)
	}
	c, err := http.ParseSetCookie(lines[0])
	if err != nil {
		t.Fatalf("parse Set-Cookie %q: %v", lines[0], err)
	}
	if c.Name != name {
		t.Fatalf("got cookie %q; want %q", c.Name, name)
	}
	return c
}

func noSetCookie(t testing.TB, r response) {
	t.Helper()
	if got := r.header.Values("Set-Cookie"); len(got) > 0 {
		t.Errorf("got Set-Cookie %q; want none", got)
	}
}

// expectCookie checks every attribute of a refresh cookie but its value.
func expectCookie(t testing.TB, c *http.Cookie, path string, maxAge int, secure bool, sameSite http.SameSite) {
	t.Helper()
	if c.Path != path {
		t.Errorf("got Path %q; want %q", c.Path, path)
	}
	if c.MaxAge != maxAge {
		t.Errorf("got Max-Age %d; want %d", c.MaxAge, maxAge)
	}
	if !c.HttpOnly {
		t.Errorf("got a cookie without HttpOnly (%s); want HttpOnly", c.Raw)
	}
	if c.Secure != secure {
		t.Errorf("got Secure %t (%s); want %t", c.Secure, c.Raw, secure)
	}
	if c.SameSite != sameSite {
		t.Errorf("got SameSite %v (%s); want %v", c.SameSite, c.Raw, sameSite)
	}
	if c.Domain != "" || !c.Expires.IsZero() {
		t.Errorf("got Domain %q, Expires %v; want neither", c.Domain, c.Expires)
	}
}

func TestBrowserLoginPutsTheRefreshTokenInACookie(t *testing.T) {
	f := newBrowserFixture(t, options{})
	r := f.page("login", pageRequest{origin: appOrigin, contentType: "application/json", body: `{"username":"alice","password":"wonderland"}`})
	if r.status != http.StatusOK {
		t.Fatalf("login: got %d %s; want 200", r.status, r.body)
	}
	a := r.answer(t)
	if a.RefreshToken != "" || strings.Contains(string(r.body), "refresh_token") {
		t.Errorf("got a refresh token in the body %s; want it only in the cookie", r.body)
	}
	if a.AccessToken == "" || a.TokenType != "Bearer" || a.ExpiresIn != int64(accessLifetime/time.Second) {
		t.Errorf("got %s; want an access token, Bearer, %d", r.body, int64(accessLifetime/time.Second))
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("got Cache-Control %q; want no-store", got)
	}
	c := setCookie(t, r, secureCookie)
	expectCookie(t, c, "/apps/billing", int(sessionLife/time.Second), true, http.SameSiteStrictMode)
	claims, err := f.policy.Codec.VerifyRefresh(c.Value)
	if err != nil || claims.Generation != 0 || claims.Subject != "alice" {
		t.Fatalf("got cookie claims %+v, %v; want alice's refresh token of generation 0", claims, err)
	}
	if got := f.introspect(f.policy, a.AccessToken); got["active"] != true || got["sid"] != claims.SessionID {
		t.Errorf("got introspection %v; want the access token active in the cookie's session", got)
	}
}

// TestBrowserCookieAttributes: each setting of spec.browser and of the server gives its cookie.
func TestBrowserCookieAttributes(t *testing.T) {
	no, yes := false, true
	tests := []struct {
		name            string
		browser         *v1alpha1.BrowserSpec
		insecureCookies bool
		prefix          string
		wantName        string
		wantPath        string
		wantSecure      bool
		wantSameSite    http.SameSite
	}{
		{"the defaults are a Secure, Strict cookie scoped to the issuer path", browserSpec(appOrigin), false, "",
			secureCookie, "/apps/billing", true, http.SameSiteStrictMode},
		{"Lax is honoured", &v1alpha1.BrowserSpec{AllowedOrigins: []v1alpha1.BrowserOrigin{appOrigin}, Cookie: v1alpha1.BrowserCookieSpec{SameSite: v1alpha1.SameSiteLax}}, false, "",
			secureCookie, "/apps/billing", true, http.SameSiteLaxMode},
		{"None, which the API server refuses, is served as Strict", &v1alpha1.BrowserSpec{AllowedOrigins: []v1alpha1.BrowserOrigin{appOrigin}, Cookie: v1alpha1.BrowserCookieSpec{SameSite: "None"}}, false, "",
			secureCookie, "/apps/billing", true, http.SameSiteStrictMode},
		{"secure true stays Secure in the dev mode", &v1alpha1.BrowserSpec{AllowedOrigins: []v1alpha1.BrowserOrigin{"http://localhost:5173"}, Cookie: v1alpha1.BrowserCookieSpec{Secure: &yes}}, true, "",
			secureCookie, "/apps/billing", true, http.SameSiteStrictMode},
		{"secure false outside the dev mode is served Secure anyway", &v1alpha1.BrowserSpec{AllowedOrigins: []v1alpha1.BrowserOrigin{"http://localhost:5173"}, Cookie: v1alpha1.BrowserCookieSpec{Secure: &no}}, false, "",
			secureCookie, "/apps/billing", true, http.SameSiteStrictMode},
		{"secure false in the dev mode with loopback origins is honoured, without a prefix", &v1alpha1.BrowserSpec{AllowedOrigins: []v1alpha1.BrowserOrigin{"http://localhost:5173", "http://127.0.0.1:5173", "http://[::1]:5173"}, Cookie: v1alpha1.BrowserCookieSpec{Secure: &no}}, true, "",
			"tokenwarden-refresh", "/apps/billing", false, http.SameSiteStrictMode},
		{"secure false in the dev mode with a non-loopback origin is served Secure", &v1alpha1.BrowserSpec{AllowedOrigins: []v1alpha1.BrowserOrigin{"http://localhost:5173", "http://app.example.com"}, Cookie: v1alpha1.BrowserCookieSpec{Secure: &no}}, true, "",
			secureCookie, "/apps/billing", true, http.SameSiteStrictMode},
		{"the path includes the external URL's path", browserSpec(appOrigin), false, "/tokens",
			secureCookie, "/tokens/apps/billing", true, http.SameSiteStrictMode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, options{browser: tt.browser, insecureCookies: tt.insecureCookies, prefix: tt.prefix})
			origin := string(tt.browser.AllowedOrigins[0])
			r := f.page("login", pageRequest{origin: origin, contentType: "application/json", body: `{"username":"alice","password":"wonderland"}`})
			if r.status != http.StatusOK {
				t.Fatalf("login: got %d %s; want 200", r.status, r.body)
			}
			login := setCookie(t, r, tt.wantName)
			expectCookie(t, login, tt.wantPath, int(sessionLife/time.Second), tt.wantSecure, tt.wantSameSite)

			f.clock.Step(time.Hour)
			r = f.page("refresh", pageRequest{origin: origin, contentType: "application/json", body: "{}", cookies: []string{login.Value}, cookieName: tt.wantName})
			if r.status != http.StatusOK {
				t.Fatalf("refresh: got %d %s; want 200", r.status, r.body)
			}
			refreshed := setCookie(t, r, tt.wantName)
			expectCookie(t, refreshed, tt.wantPath, int((sessionLife-time.Hour)/time.Second), tt.wantSecure, tt.wantSameSite)

			r = f.page("logout", pageRequest{origin: origin, contentType: "application/json", body: "{}", cookies: []string{refreshed.Value}, cookieName: tt.wantName})
			if r.status != http.StatusOK {
				t.Fatalf("logout: got %d %s; want 200", r.status, r.body)
			}
			cleared := setCookie(t, r, tt.wantName)
			expectCookie(t, cleared, tt.wantPath, -1, tt.wantSecure, tt.wantSameSite) // -1: Max-Age=0
			if cleared.Value != "" {
				t.Errorf("got the cleared cookie with a value; want none")
			}
		})
	}
}

// TestBrowserInsecureCookieRefusalIsLogged: a policy's secure: false that the server does not honour is
// logged once, with the reason.
func TestBrowserInsecureCookieRefusalIsLogged(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	logger := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{})
	no := false
	f := newFixture(t, options{logger: logger, browser: &v1alpha1.BrowserSpec{
		AllowedOrigins: []v1alpha1.BrowserOrigin{"http://localhost:5173"}, Cookie: v1alpha1.BrowserCookieSpec{Secure: &no}}})
	for range 2 {
		r := f.page("login", pageRequest{origin: "http://localhost:5173", contentType: "application/json", body: `{"username":"alice","password":"wonderland"}`})
		expectCookie(t, setCookie(t, r, secureCookie), "/apps/billing", int(sessionLife/time.Second), true, http.SameSiteStrictMode)
	}
	mu.Lock()
	defer mu.Unlock()
	var told []string
	for _, l := range lines {
		if strings.Contains(l, "without Secure") {
			told = append(told, l)
		}
	}
	if len(told) != 1 || !strings.Contains(told[0], "only the dev mode") || !strings.Contains(told[0], "apps/billing") {
		t.Errorf("got log lines %q; want one naming the policy and the dev mode", told)
	}
}

func TestBrowserRefreshRotatesTheCookie(t *testing.T) {
	f := newBrowserFixture(t, options{})
	login, c0 := f.pageLogin()
	f.clock.Step(accessLifetime + time.Minute)
	if _, err := f.policy.Codec.VerifyAccess(login.AccessToken); err == nil {
		t.Fatalf("the login's access token still verifies; want it expired")
	}
	r := f.fetch("refresh", c0)
	if r.status != http.StatusOK {
		t.Fatalf("refresh: got %d %s; want 200", r.status, r.body)
	}
	a := r.answer(t)
	if a.RefreshToken != "" || a.AccessToken == "" {
		t.Errorf("got %s; want an access token and no refresh token in the body", r.body)
	}
	if _, err := f.policy.Codec.VerifyAccess(a.AccessToken); err != nil {
		t.Errorf("the refreshed access token does not verify: %v", err)
	}
	c1 := setCookie(t, r, secureCookie)
	expectCookie(t, c1, "/apps/billing", int((sessionLife-accessLifetime-time.Minute)/time.Second), true, http.SameSiteStrictMode)
	claims, err := f.policy.Codec.VerifyRefresh(c1.Value)
	if err != nil || claims.Generation != 1 {
		t.Fatalf("got the new cookie's claims %+v, %v; want generation 1", claims, err)
	}
	c2 := f.pageRefresh(c1.Value)
	if claims, err := f.policy.Codec.VerifyRefresh(c2); err != nil || claims.Generation != 2 {
		t.Fatalf("got the next cookie's claims %+v, %v; want generation 2", claims, err)
	}
}

func TestBrowserReuseOfAnOldCookieRevokesTheSession(t *testing.T) {
	f := newBrowserFixture(t, options{})
	_, c0 := f.pageLogin()
	c1 := f.pageRefresh(c0)
	r := f.fetch("refresh", c0)
	expectError(t, r, http.StatusUnauthorized, "invalid_grant")
	noSetCookie(t, r)
	if got := f.metric("tokenwarden_issuer_refresh_token_reuse_total", "namespace", "apps", "policy", "billing"); got != 1 {
		t.Errorf("got reuse count %v; want 1", got)
	}
	// The session is revoked: the newest cookie no longer refreshes either.
	expectError(t, f.fetch("refresh", c1), http.StatusUnauthorized, "invalid_grant")
}

func TestBrowserCookieRefreshKeepsTheGracePeriod(t *testing.T) {
	f := newBrowserFixture(t, options{grace: 10 * time.Second})
	_, c0 := f.pageLogin()
	c1 := f.pageRefresh(c0)
	f.clock.Step(5 * time.Second)
	if again := f.pageRefresh(c0); again != c1 {
		t.Fatalf("a duplicate inside the grace period got another successor; want the same cookie value")
	}
	f.clock.Step(10 * time.Second)
	expectError(t, f.fetch("refresh", c0), http.StatusUnauthorized, "invalid_grant")
	expectError(t, f.fetch("refresh", c1), http.StatusUnauthorized, "invalid_grant")
}

func TestBrowserLogoutRevokesTheCookiesSessionAndClearsIt(t *testing.T) {
	f := newBrowserFixture(t, options{})
	login, c0 := f.pageLogin()
	r := f.fetch("logout", c0)
	if r.status != http.StatusOK || r.object(t)["status"] != "logged out" {
		t.Fatalf("logout: got %d %s; want 200 logged out", r.status, r.body)
	}
	cleared := setCookie(t, r, secureCookie)
	expectCookie(t, cleared, "/apps/billing", -1, true, http.SameSiteStrictMode)
	if !strings.Contains(cleared.Raw, "Max-Age=0") || cleared.Value != "" {
		t.Errorf("got %q; want an empty value with Max-Age=0", cleared.Raw)
	}
	expectError(t, f.fetch("refresh", c0), http.StatusUnauthorized, "invalid_grant")
	if got := f.introspect(f.policy, login.AccessToken); got["active"] != false {
		t.Errorf("got introspection %v after logout; want inactive", got)
	}

	t.Run("a cookie that does not verify is cleared too", func(t *testing.T) {
		f := f.with(t)
		r := f.fetch("logout", "not-a-token")
		expectError(t, r, http.StatusUnauthorized, "invalid_grant")
		if c := setCookie(t, r, secureCookie); c.MaxAge != -1 {
			t.Errorf("got %q; want the cookie cleared", c.Raw)
		}
	})
	t.Run("a logout that cannot be recorded keeps the cookie", func(t *testing.T) {
		f := f.with(t)
		_, c := f.pageLogin()
		f.store.fail(revocation.ErrUnavailable)
		r := f.fetch("logout", c)
		f.store.fail(nil)
		expectError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
		noSetCookie(t, r)
		f.pageRefresh(c)
	})
}

// TestBrowserCORS: only the allowed origins, exactly as listed, get CORS headers; every answer varies
// by Origin.
func TestBrowserCORS(t *testing.T) {
	f := newBrowserFixture(t, options{})
	tests := []struct {
		name    string
		origin  []string
		allowed bool
	}{
		{"the allowed origin", []string{appOrigin}, true},
		{"an unlisted origin", []string{"https://evil.example.com"}, false},
		{"the opaque origin null", []string{"null"}, false},
		{"no origin", nil, false},
		{"the allowed origin with a trailing slash", []string{appOrigin + "/"}, false},
		{"the allowed origin over http", []string{"http://app.example.com"}, false},
		{"the allowed origin with a port", []string{appOrigin + ":8443"}, false},
		{"the allowed origin in upper case", []string{"https://APP.example.com"}, false},
		{"a suffix of the allowed origin", []string{"https://app.example.com.evil.example"}, false},
		{"two origins", []string{appOrigin, appOrigin}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := f.with(t)
			a := f.login()
			preflight := f.preflight("refresh", http.Header{"Origin": tt.origin})
			refresh := f.do(http.MethodPost, f.policy.Issuer+"/refresh", "application/json",
				strings.NewReader(`{"refresh_token":"`+a.RefreshToken+`"}`), http.Header{"Origin": tt.origin})
			if refresh.status != http.StatusOK {
				t.Fatalf("refresh with the token in the body: got %d %s; want 200", refresh.status, refresh.body)
			}
			wrongPassword := f.do(http.MethodPost, f.policy.Issuer+"/login", "application/json",
				strings.NewReader(`{"username":"alice","password":"guess"}`), http.Header{"Origin": tt.origin})
			for name, r := range map[string]response{"preflight": preflight, "refresh": refresh, "refused login": wrongPassword} {
				if !slices.Contains(r.header.Values("Vary"), "Origin") {
					t.Errorf("%s: got Vary %q; want Origin", name, r.header.Values("Vary"))
				}
				acao, acac := r.header.Get("Access-Control-Allow-Origin"), r.header.Get("Access-Control-Allow-Credentials")
				switch {
				case tt.allowed && (acao != tt.origin[0] || acac != "true"):
					t.Errorf("%s: got Access-Control-Allow-Origin %q, -Credentials %q; want %q, true", name, acao, acac, tt.origin[0])
				case !tt.allowed && (acao != "" || acac != ""):
					t.Errorf("%s: got Access-Control-Allow-Origin %q, -Credentials %q; want neither", name, acao, acac)
				}
			}
			if tt.allowed {
				expectError(t, wrongPassword, http.StatusUnauthorized, "invalid_grant")
			} else if len(tt.origin) > 0 {
				expectError(t, wrongPassword, http.StatusForbidden, "access_denied")
			}
		})
	}
}

// preflight sends a CORS preflight for a POST with Content-Type to the endpoint of the main policy.
func (f *fixture) preflight(endpoint string, h http.Header) response {
	f.t.Helper()
	h = h.Clone()
	h.Set("Access-Control-Request-Method", "POST")
	h.Set("Access-Control-Request-Headers", "content-type")
	return f.do(http.MethodOptions, f.policy.Issuer+"/"+endpoint, "", nil, h)
}

func TestBrowserPreflightTouchesNothing(t *testing.T) {
	f := newBrowserFixture(t, options{})
	_, c0 := f.pageLogin()
	logins := f.total("tokenwarden_issuer_logins_total")
	for _, endpoint := range []string{"login", "refresh", "logout"} {
		h := http.Header{"Origin": {appOrigin}, "Cookie": {secureCookie + "=" + c0}}
		r := f.preflight(endpoint, h)
		if r.status != http.StatusNoContent || len(r.body) != 0 {
			t.Fatalf("%s preflight: got %d %q; want 204 without a body", endpoint, r.status, r.body)
		}
		for name, want := range map[string]string{"Access-Control-Allow-Origin": appOrigin, "Access-Control-Allow-Credentials": "true",
			"Access-Control-Allow-Methods": "POST", "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"} {
			if got := r.header.Get(name); got != want {
				t.Errorf("%s preflight: got %s %q; want %q", endpoint, name, got, want)
			}
		}
		noSetCookie(t, r)
	}
	if got := f.total("tokenwarden_issuer_refreshes_total"); got != 0 {
		t.Errorf("got %v refreshes after preflights; want 0", got)
	}
	if got := f.total("tokenwarden_issuer_logins_total"); got != logins {
		t.Errorf("got %v logins after preflights; want %v", got, logins)
	}
	// The cookie is still generation 0 of a live session: nothing rotated or revoked it.
	if claims, err := f.policy.Codec.VerifyRefresh(f.pageRefresh(c0)); err != nil || claims.Generation != 1 {
		t.Fatalf("got %+v, %v; want generation 1", claims, err)
	}

	t.Run("a policy without the browser mode answers no preflight", func(t *testing.T) {
		f := newFixture(t, options{})
		r := f.preflight("refresh", http.Header{"Origin": {appOrigin}})
		expectError(t, r, http.StatusMethodNotAllowed, "invalid_request")
		if r.header.Get("Allow") != "POST" || r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("got Allow %q, Access-Control-Allow-Origin %q; want POST and none", r.header.Get("Allow"), r.header.Get("Access-Control-Allow-Origin"))
		}
	})
	t.Run("an unknown policy is not found", func(t *testing.T) {
		r := f.with(t).do(http.MethodOptions, f.ts.URL+"/apps/nope/refresh", "", nil, http.Header{"Origin": {appOrigin}})
		expectError(t, r, http.StatusNotFound, "not_found")
	})
}

// TestBrowserCSRFRefusalsChangeNothing: a request that uses the cookie without an allowed Origin and the
// JSON content type is 403, and the session is as it was: its cookie still refreshes (a rotation would
// have made it a reuse, a logout would have revoked it).
func TestBrowserCSRFRefusalsChangeNothing(t *testing.T) {
	f := newBrowserFixture(t, options{})
	tests := []struct {
		name        string
		origin      string
		contentType string
		body        string
	}{
		{"a form post from another origin", "https://evil.example.com", formType, "refresh_token="},
		{"a form post from the allowed origin", appOrigin, formType, "a=b"},
		{"a multipart form from the allowed origin", appOrigin, "multipart/form-data; boundary=x", "--x--"},
		{"a text/plain post from the allowed origin", appOrigin, "text/plain", "{}"},
		{"a post without a content type from the allowed origin", appOrigin, "", "{}"},
		{"JSON from another origin", "https://evil.example.com", "application/json", "{}"},
		{"JSON from a sibling host", "https://evil.app.example.com", "application/json", "{}"},
		{"JSON from the opaque origin null", "null", "application/json", "{}"},
		{"JSON without an Origin", "", "application/json", "{}"},
	}
	for _, endpoint := range []string{"refresh", "logout"} {
		for _, tt := range tests {
			t.Run(endpoint+": "+tt.name, func(t *testing.T) {
				f := f.with(t)
				_, c := f.pageLogin()
				r := f.page(endpoint, pageRequest{origin: tt.origin, contentType: tt.contentType, body: tt.body, cookies: []string{c}})
				expectError(t, r, http.StatusForbidden, "access_denied")
				noSetCookie(t, r)
				f.pageRefresh(c)
			})
		}
	}
	t.Run("two refresh cookies", func(t *testing.T) {
		f := f.with(t)
		_, c := f.pageLogin()
		_, other := f.pageLogin()
		r := f.page("refresh", pageRequest{origin: appOrigin, contentType: "application/json", body: "{}", cookies: []string{other, c}})
		expectError(t, r, http.StatusBadRequest, "invalid_request")
		f.pageRefresh(c)
		f.pageRefresh(other)
	})
}

// TestBrowserLoginRefusals: a login from a browser (it has an Origin) must pass the same checks: no other
// page can log the browser in, and a refused login costs no password attempt.
func TestBrowserLoginRefusals(t *testing.T) {
	f := newBrowserFixture(t, options{userRate: issuer.RateLimit{PerSecond: 0.001, Burst: 1}})
	for _, tt := range []struct{ name, origin, contentType string }{
		{"from another origin", "https://evil.example.com", "application/json"},
		{"from the opaque origin null", "null", "application/json"},
		{"as a form from the allowed origin", appOrigin, formType},
		{"as text/plain from the allowed origin", appOrigin, "text/plain"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := f.with(t)
			r := f.page("login", pageRequest{origin: tt.origin, contentType: tt.contentType, body: `{"username":"alice","password":"wonderland"}`})
			expectError(t, r, http.StatusForbidden, "access_denied")
			noSetCookie(t, r)
		})
	}
	if got := f.total("tokenwarden_issuer_logins_total"); got != 0 {
		t.Errorf("got %v login attempts counted; want 0", got)
	}
	// alice's one attempt (a burst of 1, refilled after 1000 s of the fixture's clock) is still there.
	f.pageLogin()
}

// TestBrowserModeLeavesOtherClientsAsTheyWere: tokens in the body, the token endpoint, and policies
// without the browser mode are served as before.
func TestBrowserModeLeavesOtherClientsAsTheyWere(t *testing.T) {
	f := newBrowserFixture(t, options{})
	t.Run("the token endpoint", func(t *testing.T) {
		f := f.with(t)
		r := f.postForm(f.policy, "token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}},
			http.Header{"Origin": {appOrigin}})
		if r.status != http.StatusOK || r.answer(t).RefreshToken == "" {
			t.Fatalf("got %d %s; want 200 with a refresh token", r.status, r.body)
		}
		noSetCookie(t, r)
		if got := r.header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("got Access-Control-Allow-Origin %q from the token endpoint; want none", got)
		}
	})
	t.Run("a refresh and a logout with the token in the body", func(t *testing.T) {
		f := f.with(t)
		a := f.login()
		for _, origin := range []string{"", appOrigin} {
			r := f.page("refresh", pageRequest{origin: origin, contentType: "application/json", body: `{"refresh_token":"` + a.RefreshToken + `"}`})
			if r.status != http.StatusOK {
				t.Fatalf("refresh: got %d %s; want 200", r.status, r.body)
			}
			noSetCookie(t, r)
			if a = r.answer(t); a.RefreshToken == "" {
				t.Fatalf("got %s; want the refresh token in the body", r.body)
			}
		}
		r := f.page("logout", pageRequest{contentType: "application/json", body: `{"refresh_token":"` + a.RefreshToken + `"}`})
		if r.status != http.StatusOK {
			t.Fatalf("logout: got %d %s; want 200", r.status, r.body)
		}
		noSetCookie(t, r)
		expectError(t, f.refresh(a.RefreshToken), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("a refresh with neither token nor cookie", func(t *testing.T) {
		f := f.with(t)
		expectError(t, f.fetch("refresh", ""), http.StatusBadRequest, "invalid_request")
		expectError(t, f.page("refresh", pageRequest{contentType: formType, body: "refresh_token=x"}), http.StatusUnsupportedMediaType, "invalid_request")
	})
	t.Run("a policy without the browser mode", func(t *testing.T) {
		f := newFixture(t, options{})
		r := f.page("login", pageRequest{origin: appOrigin, contentType: "application/json", body: `{"username":"alice","password":"wonderland"}`})
		if r.status != http.StatusOK || r.answer(t).RefreshToken == "" {
			t.Fatalf("got %d %s; want 200 with a refresh token in the body", r.status, r.body)
		}
		noSetCookie(t, r)
		for _, h := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Vary"} {
			if got := r.header.Get(h); got != "" {
				t.Errorf("got %s %q; want none", h, got)
			}
		}
	})
}

func TestBrowserModeInDiscovery(t *testing.T) {
	f := newBrowserFixture(t, options{})
	r := f.do(http.MethodGet, f.policy.Issuer+"/.well-known/openid-configuration", "", nil, nil)
	got, ok := r.object(t)["tokenwarden_browser_session"].(map[string]any)
	if !ok {
		t.Fatalf("got %s; want tokenwarden_browser_session", r.body)
	}
	want := map[string]any{"login_endpoint": f.policy.Issuer + "/login", "refresh_endpoint": f.policy.Issuer + "/refresh",
		"logout_endpoint": f.policy.Issuer + "/logout", "refresh_cookie_name": secureCookie, "refresh_cookie_path": "/apps/billing",
		"refresh_cookie_same_site": "Strict", "refresh_cookie_secure": true, "refresh_cookie_http_only": true,
		"request_content_type": "application/json", "credentials": "include"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("got %s %v; want %v", k, got[k], v)
		}
	}
	r = f.do(http.MethodGet, f.other.Issuer+"/.well-known/oauth-authorization-server", "", nil, nil)
	if _, ok := r.object(t)["tokenwarden_browser_session"]; ok {
		t.Errorf("got tokenwarden_browser_session for a policy without the browser mode: %s", r.body)
	}
}

// total is the sum of the counter name over all its labels.
func (f *fixture) total(name string) float64 {
	f.t.Helper()
	families, err := f.registry.Gather()
	if err != nil {
		f.t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range families {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

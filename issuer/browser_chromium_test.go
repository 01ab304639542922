package issuer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// The browser tests drive headless Chromium (hack/chromium.sh installs it; make test runs that script)
// against a fixture's issuer on loopback. The app is a page on another loopback port: cross-origin, and
// on the same site, so a SameSite=Strict cookie of the issuer goes with its requests and only the
// issuer's own checks (CORS, Origin, content type) stand between a foreign page and the session. The
// page lives under the cookie's path: cookies are not separated by port, so a cookie without HttpOnly
// would show in its document.cookie.

// chromium returns the path of a Chromium binary: $CHROMIUM, or chromium (Debian), chromium-browser or
// google-chrome on PATH. It skips the test when there is none.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("Chromium is not installed: run hack/chromium.sh (make test does) or set CHROMIUM to a Chromium binary; the browser test is skipped")
	return ""
}

// lockedBuffer collects the browser's output for a failure message.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startBrowser starts headless Chromium with a fresh profile, loopback only and without background
// traffic, and returns a context whose browser lives until the test ends (or the deadline passes, which
// stops the browser and fails every later step).
func startBrowser(t *testing.T, deadline time.Duration) context.Context {
	t.Helper()
	bin := chromium(t)
	out := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.CombinedOutput(out),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(string, ...any) {}))
	// Cleanups run last-registered first: the browser stops (and its profile is released) before the
	// profile folder is removed.
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancel()
		if t.Failed() {
			t.Logf("Chromium's output:\n%s", out.String())
		}
	})
	if err := chromedp.Do(browserCtx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium %s: %v\n%s", bin, err, out.String())
	}
	return browserCtx
}

// pageHTML is the app: call(endpoint, body) fetches the JSON API with credentials and returns
// {status, body} or, when the browser refuses to let the page see the answer, {status: 0, error}. The
// forms post to the issuer as any site could, without a preflight.
const pageHTML = `<!doctype html>
<meta charset="utf-8"><title>app</title>
<script>
const issuer = %s;
async function call(endpoint, body) {
  try {
    const r = await fetch(issuer + "/" + endpoint, {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {})});
    return {status: r.status, body: await r.json()};
  } catch (e) {
    return {status: 0, error: String(e)};
  }
}
</script>
<form id="refresh" method="post" enctype="text/plain" action="%[2]s/refresh"><input type="hidden" name='{"a":"' value='"}'></form>
<form id="logout" method="post" action="%[2]s/logout"><input type="hidden" name="refresh_token" value=""></form>
`

// pageServer serves the app page at path on a loopback port; its URL is known before it starts.
func pageServer(t *testing.T) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	t.Cleanup(ts.Close)
	return ts
}

func startPage(ts *httptest.Server, path, issuer string) {
	js, _ := json.Marshal(issuer)
	body := fmt.Sprintf(pageHTML, js, issuer)
	ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(body))
	})
	ts.Start()
}

// fetched is what call() returned in the page.
type fetched struct {
	Status int            `json:"status"`
	Body   map[string]any `json:"body"`
	Error  string         `json:"error"`
}

// tab is a page of the browser, and the fixture whose issuer it calls.
type tab struct {
	t   *testing.T
	ctx context.Context
	f   *fixture
}

func (b *tab) navigate(url string) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("navigate to %s: %v", url, err)
	}
}

func (b *tab) call(endpoint string, body any) fetched {
	b.t.Helper()
	arg, _ := json.Marshal(body)
	got, err := chromedp.Run(b.ctx, chromedp.Evaluate[fetched](fmt.Sprintf("call(%q, %s)", endpoint, arg), chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("call %s in the page: %v", endpoint, err)
	}
	return got
}

func (b *tab) eval(js string) string {
	b.t.Helper()
	got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return got
}

// cookie is the refresh cookie the browser holds for the issuer, nil when it holds none.
func (b *tab) cookie(name string) *network.Cookie {
	b.t.Helper()
	res, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.f.policy.Issuer + "/refresh"}})
	if err != nil {
		b.t.Fatalf("read the browser's cookies: %v", err)
	}
	var found *network.Cookie
	for _, c := range res.Cookies {
		if strings.Contains(c.Name, "tokenwarden-refresh") {
			if c.Name != name || found != nil {
				b.t.Fatalf("got a refresh cookie %q (and %v); want only %q", c.Name, found, name)
			}
			found = c
		}
	}
	return found
}

// submit submits the page's form id, which navigates to the issuer's answer, and returns its status.
func (b *tab) submit(id string) int64 {
	b.t.Helper()
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Evaluate[chromedp.Void](fmt.Sprintf("document.getElementById(%q).submit()", id)))
	if err != nil || resp == nil {
		b.t.Fatalf("submit form %s: %v", id, err)
	}
	return resp.Status
}

// generation is the generation of a refresh token the issuer minted.
func (f *fixture) generation(raw string) uint64 {
	f.t.Helper()
	c, err := f.policy.Codec.VerifyRefresh(raw)
	if err != nil {
		f.t.Fatalf("the cookie's refresh token does not verify: %v", err)
	}
	return c.Generation
}

func TestABrowserKeepsTheRefreshTokenInAnHttpOnlyCookie(t *testing.T) {
	start := time.Now() // for the log only
	browser := startBrowser(t, 3*time.Minute)
	no := false
	for _, tc := range []struct {
		name     string
		cookie   v1alpha1.BrowserCookieSpec
		dev      bool
		wantName string
		secure   bool
	}{
		{"a Secure cookie, as every issuer serves it", v1alpha1.BrowserCookieSpec{}, false, secureCookie, true},
		{"a cookie without Secure, as the dev mode serves it for loopback origins", v1alpha1.BrowserCookieSpec{Secure: &no}, true, "tokenwarden-refresh", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, foreign := pageServer(t), pageServer(t)
			appOrigin := "http://" + app.Listener.Addr().String()
			f := newFixture(t, options{insecureCookies: tc.dev, browser: &v1alpha1.BrowserSpec{
				AllowedOrigins: []v1alpha1.BrowserOrigin{v1alpha1.BrowserOrigin(appOrigin)}, Cookie: tc.cookie}})
			pagePath := "/apps/billing/app.html" // under the cookie's path
			startPage(app, pagePath, f.policy.Issuer)
			startPage(foreign, pagePath, f.policy.Issuer)
			ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
			defer cancel()
			b := &tab{t: t, ctx: ctx, f: f}
			b.navigate(app.URL + pagePath)

			// Log in: the access token in the body, the refresh token in a cookie the page cannot read.
			login := b.call("login", map[string]string{"username": "alice", "password": "wonderland"})
			if login.Status != http.StatusOK || login.Body["access_token"] == nil {
				t.Fatalf("login: got %+v; want 200 with an access token", login)
			}
			if _, ok := login.Body["refresh_token"]; ok {
				t.Fatalf("login: got a refresh token in the body %v; want it only in the cookie", login.Body)
			}
			if got := b.eval("document.cookie"); strings.Contains(got, "tokenwarden-refresh") || strings.Contains(got, "eyJ") {
				t.Fatalf("document.cookie is %q; want no refresh token in it", got)
			}
			c0 := b.cookie(tc.wantName)
			if c0 == nil || !c0.HTTPOnly || c0.Secure != tc.secure || c0.SameSite != network.CookieSameSiteStrict || c0.Path != "/apps/billing" {
				t.Fatalf("got the browser's cookie %+v; want it HttpOnly, Secure %t, SameSite Strict, Path /apps/billing", c0, tc.secure)
			}
			if g := f.generation(c0.Value); g != 0 {
				t.Fatalf("got generation %d in the cookie; want 0", g)
			}

			// Once the access token has expired, the page refreshes through the cookie, which rotates.
			f.clock.Step(accessLifetime + time.Minute)
			if _, err := f.policy.Codec.VerifyAccess(login.Body["access_token"].(string)); err == nil {
				t.Fatalf("the login's access token still verifies; want it expired")
			}
			refreshed := b.call("refresh", nil)
			if refreshed.Status != http.StatusOK || refreshed.Body["refresh_token"] != nil {
				t.Fatalf("refresh: got %+v; want 200 without a refresh token in the body", refreshed)
			}
			if _, err := f.policy.Codec.VerifyAccess(refreshed.Body["access_token"].(string)); err != nil {
				t.Fatalf("the refreshed access token does not verify: %v", err)
			}
			c1 := b.cookie(tc.wantName)
			if c1 == nil || f.generation(c1.Value) != 1 {
				t.Fatalf("got the browser's cookie %+v after the refresh; want generation 1", c1)
			}

			// The same page on an origin that is not allowed: the browser's preflight gets no CORS
			// answer, so neither the login nor the refresh is sent.
			requests := f.total("tokenwarden_issuer_requests_total")
			preflights := f.metric("tokenwarden_issuer_requests_total", "endpoint", "preflight")
			b.navigate(foreign.URL + pagePath)
			for _, endpoint := range []string{"login", "refresh"} {
				got := b.call(endpoint, map[string]string{"username": "alice", "password": "wonderland"})
				if got.Status != 0 || !strings.Contains(got.Error, "Failed to fetch") {
					t.Fatalf("%s from a foreign origin: got %+v; want the browser to refuse it", endpoint, got)
				}
			}
			if got := f.total("tokenwarden_issuer_requests_total") - requests; got != 2 ||
				f.metric("tokenwarden_issuer_requests_total", "endpoint", "preflight")-preflights != 2 {
				t.Fatalf("the issuer got %v requests from the foreign page; want only its 2 preflights", got)
			}

			// A forged form post from that origin carries the cookie (same site) and is refused: 403, the
			// cookie unchanged and its session alive.
			for _, form := range []string{"refresh", "logout"} {
				b.navigate(foreign.URL + pagePath)
				if status := b.submit(form); status != http.StatusForbidden {
					t.Fatalf("a foreign form post to %s: got %d; want 403", form, status)
				}
				if got := f.metric("tokenwarden_issuer_requests_total", "endpoint", form, "outcome", "access_denied"); got != 1 {
					t.Fatalf("got %v refused %s requests; want the form post refused as access_denied", got, form)
				}
			}
			b.navigate(app.URL + pagePath)
			if c := b.cookie(tc.wantName); c == nil || c.Value != c1.Value {
				t.Fatalf("the cookie changed after refused requests")
			}
			if got := b.call("refresh", nil); got.Status != http.StatusOK {
				t.Fatalf("refresh after the refused requests: got %+v; want 200", got)
			}
			c2 := b.cookie(tc.wantName)
			if c2 == nil || f.generation(c2.Value) != 2 {
				t.Fatalf("got the browser's cookie %+v; want generation 2", c2)
			}

			// Log out: the session is revoked and the cookie gone, so the page cannot refresh any more.
			if got := b.call("logout", nil); got.Status != http.StatusOK || got.Body["status"] != "logged out" {
				t.Fatalf("logout: got %+v; want 200 logged out", got)
			}
			if c := b.cookie(tc.wantName); c != nil {
				t.Fatalf("the browser still holds the cookie %+v after logout", c)
			}
			if got := b.call("refresh", nil); got.Status != http.StatusBadRequest || got.Body["error"] != "invalid_request" {
				t.Fatalf("refresh after logout: got %+v; want 400 invalid_request (no cookie)", got)
			}
			expectError(t, f.postJSON(f.policy, "refresh", map[string]string{"refresh_token": c2.Value}), http.StatusUnauthorized, "invalid_grant")
		})
	}
	t.Logf("The browser test took %s", time.Since(start).Round(10*time.Millisecond))
}

package issuer_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// checkAnswer fails unless rec is a well-formed answer: never a 5xx but 503 temporarily_unavailable,
// never cacheable, and a JSON error body for every error.
func checkAnswer(t *testing.T, endpoint string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("got Cache-Control %q; want no-store", got)
	}
	if rec.Code == http.StatusOK {
		switch endpoint {
		case "revoke":
		case "introspect":
			var v struct{ Active *bool }
			if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || v.Active == nil {
				t.Errorf("got 200 %s; want an introspection answer", rec.Body)
			}
		case "logout":
			if strings.TrimSpace(rec.Body.String()) != `{"status":"logged out"}` {
				t.Errorf("got 200 %s; want logged out", rec.Body)
			}
		default:
			var a answer
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || a.AccessToken == "" || a.RefreshToken == "" {
				t.Errorf("got 200 %s; want a token response", rec.Body)
			}
		}
		return
	}
	var e answer
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Errorf("got %d %s; want a JSON error", rec.Code, rec.Body)
	}
	if rec.Code >= 500 && (rec.Code != http.StatusServiceUnavailable || e.Error != "temporarily_unavailable") {
		t.Errorf("got %d %s; want no server error", rec.Code, rec.Body)
	}
}

// FuzzFormEndpoints sends arbitrary bodies, with one of a few content types, to the form-encoded
// endpoints: token, revoke and introspect.
func FuzzFormEndpoints(f *testing.F) {
	fx := newFixture(f, options{quiet: true})
	a := fx.login()
	for _, body := range []string{
		"grant_type=password&username=alice&password=wonderland",
		"grant_type=password&username=alice&password=wonderland&client_id=web",
		"grant_type=refresh_token&refresh_token=" + a.RefreshToken,
		"grant_type=refresh_token&refresh_token=" + a.AccessToken,
		"grant_type=" + url.QueryEscape("urn:ietf:params:oauth:grant-type:token-exchange") + "&subject_token_type=" +
			url.QueryEscape("urn:ietf:params:oauth:token-type:jwt") + "&subject_token=" + url.QueryEscape(saToken("apps", "worker", fx.policy.Issuer)) +
			"&audience=" + url.QueryEscape(audience) + "&audience=x",
		"token=" + a.AccessToken + "&token_type_hint=access_token",
		"token=" + a.RefreshToken + "&token_type_hint=refresh_token",
		"grant_type=password&username=%ff%fe&password=%00",
		"grant_type=refresh_token&refresh_token=a.b.c",
		"a=1&a=2", "%", "&&==;", "scope=x&grant_type=password",
	} {
		for endpoint := range uint8(3) {
			f.Add(endpoint, uint8(0), body)
		}
	}
	f.Add(uint8(0), uint8(2), `{"grant_type":"password"}`)
	contentTypes := []string{formType, formType + "; charset=utf-8", "application/json", "", "multipart/form-data; boundary=x", "text/plain"}
	handler := fx.server.Handler()
	f.Fuzz(func(t *testing.T, endpoint, contentType uint8, body string) {
		name := []string{"token", "revoke", "introspect"}[int(endpoint)%3]
		req := httptest.NewRequest(http.MethodPost, "/apps/billing/"+name, strings.NewReader(body))
		if ct := contentTypes[int(contentType)%len(contentTypes)]; ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if name == "introspect" {
			req.Header.Set("Authorization", "Bearer "+saToken("apps", "api", fx.policy.Issuer))
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		checkAnswer(t, name, rec)
	})
}

// FuzzJSONAPI sends arbitrary JSON API bodies to login, refresh and logout.
func FuzzJSONAPI(f *testing.F) {
	fx := newFixture(f, options{quiet: true})
	a := fx.login()
	for _, seed := range []struct {
		endpoint uint8
		body     string
	}{
		{0, `{"username":"alice","password":"wonderland"}`},
		{0, `{"username":"alice","password":"wonderland","remember":true}`},
		{0, `{"username":"\u0000","password":"\ud800"}`},
		{0, `{"username":1}`},
		{1, `{"refresh_token":"` + a.RefreshToken + `"}`},
		{1, `{"refresh_token":"` + a.AccessToken + `"}`},
		{1, `{"refresh_token":null}`},
		{1, `null`},
		{2, `{"refresh_token":"` + a.RefreshToken + `"}`},
		{2, `[`},
		{2, `{"refresh_token":"x"} {"refresh_token":"y"}`},
	} {
		f.Add(seed.endpoint, seed.body)
	}
	handler := fx.server.Handler()
	f.Fuzz(func(t *testing.T, endpoint uint8, body string) {
		name := []string{"login", "refresh", "logout"}[int(endpoint)%3]
		req := httptest.NewRequest(http.MethodPost, "/apps/billing/"+name, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		checkAnswer(t, name, rec)
	})
}

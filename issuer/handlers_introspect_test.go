package issuer_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

func TestIntrospectionOfActiveTokens(t *testing.T) {
	f := newFixture(t, options{})
	a := f.clientLogin("web")
	ac, _ := f.policy.Codec.VerifyAccess(a.AccessToken)
	rc, _ := f.policy.Codec.VerifyRefresh(a.RefreshToken)
	access := map[string]any{"active": true, "token_type": "access_token", "client_id": "web", "sub": "alice",
		"aud": []any{audience}, "iss": f.policy.Issuer, "exp": float64(ac.ExpiresAt), "iat": float64(ac.IssuedAt),
		"jti": ac.ID, "sid": ac.SessionID}
	refresh := map[string]any{"active": true, "token_type": "refresh_token", "client_id": "web", "sub": "alice",
		"aud": []any{f.policy.Issuer}, "iss": f.policy.Issuer, "exp": float64(rc.ExpiresAt), "iat": float64(rc.IssuedAt),
		"jti": rc.ID, "sid": rc.SessionID}
	tests := []struct {
		name string
		form url.Values
		want map[string]any
	}{
		{"an access token", url.Values{"token": {a.AccessToken}}, access},
		{"an access token with its hint", url.Values{"token": {a.AccessToken}, "token_type_hint": {"access_token"}}, access},
		{"a refresh token", url.Values{"token": {a.RefreshToken}}, refresh},
		{"a refresh token with its hint", url.Values{"token": {a.RefreshToken}, "token_type_hint": {"refresh_token"}}, refresh},
		{"a refresh token hinted as an access token is still a refresh token", url.Values{"token": {a.RefreshToken}, "token_type_hint": {"access_token"}}, refresh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := f.with(t)
			r := f.postForm(f.policy, "introspect", tt.form, bearer(saToken("apps", "api", f.policy.Issuer)))
			if r.status != http.StatusOK || r.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("got %d %s, Cache-Control %q; want 200, no-store", r.status, r.body, r.header.Get("Cache-Control"))
			}
			if got := r.object(t); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

// TestIntrospectionOfInactiveTokens: every such answer is exactly {"active":false}.
func TestIntrospectionOfInactiveTokens(t *testing.T) {
	tests := []struct {
		name  string
		token func(f *fixture) string
	}{
		{"garbage", func(*fixture) string { return "garbage" }},
		{"a forged access token", func(f *fixture) string { return tampered(f.t, f.login().AccessToken, "sub", "bob") }},
		{"an alg:none access token", func(f *fixture) string { return unsigned(f.t, f.login().AccessToken) }},
		{"another policy's access token", func(f *fixture) string { a, _ := f.mint(f.other, "alice"); return a }},
		{"another policy's refresh token", func(f *fixture) string { _, r := f.mint(f.other, "alice"); return r }},
		{"an expired access token", func(f *fixture) string {
			a := f.login()
			f.clock.Step(accessLifetime + time.Minute)
			return a.AccessToken
		}},
		{"an expired refresh token", func(f *fixture) string {
			a := f.login()
			f.clock.Step(sessionLife + time.Minute)
			return a.RefreshToken
		}},
		{"an access token of a logged-out session", func(f *fixture) string {
			a := f.login()
			if r := f.postJSON(f.policy, "logout", map[string]string{"refresh_token": a.RefreshToken}); r.status != http.StatusOK {
				f.t.Fatalf("logout: got %d %s", r.status, r.body)
			}
			return a.AccessToken
		}},
		{"a refresh token rotated away by a refresh", func(f *fixture) string {
			a := f.login()
			if r := f.postForm(f.policy, "token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {a.RefreshToken}}, nil); r.status != http.StatusOK {
				f.t.Fatalf("refresh: got %d %s", r.status, r.body)
			}
			return a.RefreshToken
		}},
		{"a refresh token of a revoked session", func(f *fixture) string {
			a := f.login()
			if r := f.postForm(f.policy, "revoke", url.Values{"token": {a.AccessToken}}, nil); r.status != http.StatusOK {
				f.t.Fatalf("revoke: got %d %s", r.status, r.body)
			}
			return a.RefreshToken
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, options{})
			r := f.postForm(f.policy, "introspect", url.Values{"token": {tt.token(f)}}, bearer(saToken("apps", "api", f.policy.Issuer)))
			if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"active":false}` {
				t.Errorf(`got %d %s; want 200 {"active":false}`, r.status, r.body)
			}
		})
	}
}

func TestIntrospectionCallers(t *testing.T) {
	f := newFixture(t, options{})
	a := f.login()
	iss := f.policy.Issuer
	tests := []struct {
		name         string
		header       http.Header
		status       int
		code         string
		authenticate string
	}{
		{"no credentials are unauthorized", nil, 401, "invalid_token", `Bearer realm="tokenwarden"`},
		{"basic credentials are unauthorized", http.Header{"Authorization": {"Basic YXBpOg=="}}, 401, "invalid_token", `Bearer realm="tokenwarden"`},
		{"an empty bearer token is unauthorized", http.Header{"Authorization": {"Bearer "}}, 401, "invalid_token", `Bearer realm="tokenwarden"`},
		{"an invalid ServiceAccount token is unauthorized", bearer("sa|apps|api"), 401, "invalid_token", `Bearer realm="tokenwarden", error="invalid_token"`},
		{"a ServiceAccount token for another audience is unauthorized", bearer(saToken("apps", "api", audience)), 401, "invalid_token", `Bearer realm="tokenwarden", error="invalid_token"`},
		{"one of the policy's own access tokens is unauthorized", bearer(a.AccessToken), 401, "invalid_token", `Bearer realm="tokenwarden", error="invalid_token"`},
		{"a ServiceAccount the policy does not list is forbidden", bearer(saToken("apps", "worker", iss)), 403, "insufficient_scope", `Bearer realm="tokenwarden", error="insufficient_scope"`},
		{"a review that cannot be made is temporarily unavailable", bearer(reviewDown), 503, "temporarily_unavailable", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := f.with(t)
			r := f.postForm(f.policy, "introspect", url.Values{"token": {a.AccessToken}}, tt.header)
			expectError(t, r, tt.status, tt.code)
			if got := r.header.Get("WWW-Authenticate"); got != tt.authenticate {
				t.Errorf("got WWW-Authenticate %q; want %q", got, tt.authenticate)
			}
		})
	}
}

func TestIntrospectionRefusals(t *testing.T) {
	f := newFixture(t, options{})
	a := f.login()
	caller := bearer(saToken("apps", "api", f.policy.Issuer))
	expectError(t, f.postForm(f.policy, "introspect", url.Values{}, caller), http.StatusBadRequest, "invalid_request")
	body, _ := json.Marshal(map[string]string{"token": a.AccessToken})
	expectError(t, f.do(http.MethodPost, f.policy.Issuer+"/introspect", "application/json", strings.NewReader(string(body)), caller),
		http.StatusBadRequest, "invalid_request")
	expectError(t, f.do(http.MethodPost, f.policy.Issuer+"/introspect", formType, strings.NewReader("token="+strings.Repeat("a", 70<<10)), caller),
		http.StatusRequestEntityTooLarge, "invalid_request")
}

// TestIntrospectionFailsClosed: when the store cannot tell whether a token's session is still valid, a
// token that verifies is answered 503 temporarily_unavailable with Retry-After, never active and never
// inactive; a token that does not verify needs no state and is inactive; once the store can tell again,
// the answer is the store's.
func TestIntrospectionFailsClosed(t *testing.T) {
	f := newFixture(t, options{})
	a := f.login()
	tests := []struct {
		name string
		form url.Values
		err  error
	}{
		{"an access token, the state unavailable", url.Values{"token": {a.AccessToken}}, revocation.ErrUnavailable},
		{"a refresh token, the state unavailable", url.Values{"token": {a.RefreshToken}}, revocation.ErrUnavailable},
		{"a refresh token with its hint, the state unavailable", url.Values{"token": {a.RefreshToken}, "token_type_hint": {"refresh_token"}}, revocation.ErrUnavailable},
		{"an access token, a store error of no known kind", url.Values{"token": {a.AccessToken}}, errors.New("something else")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := f.with(t)
			f.store.failReads(fmt.Errorf("shard 0 is not observed: %w", tt.err))
			defer f.store.failReads(nil)
			r := f.postForm(f.policy, "introspect", tt.form, bearer(saToken("apps", "api", f.policy.Issuer)))
			expectError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
			if got := r.header.Get("Retry-After"); got == "" {
				t.Errorf("got no Retry-After; want one")
			}
		})
	}
	t.Run("a token that does not verify is inactive without the state", func(t *testing.T) {
		f := f.with(t)
		f.store.failReads(revocation.ErrUnavailable)
		defer f.store.failReads(nil)
		if got := f.introspect(f.policy, "garbage"); !reflect.DeepEqual(got, map[string]any{"active": false}) {
			t.Errorf("got %v; want {active: false}", got)
		}
	})
	t.Run("the state readable again answers again", func(t *testing.T) {
		f := f.with(t)
		for _, tok := range []string{a.AccessToken, a.RefreshToken} {
			if got := f.introspect(f.policy, tok); got["active"] != true {
				t.Errorf("got %v; want active", got)
			}
		}
	})
}

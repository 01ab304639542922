package issuer_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/issuer"
)

func TestJSONLoginRefreshLogout(t *testing.T) {
	f := newFixture(t, options{})
	r := f.postJSON(f.policy, "login", map[string]string{"username": "alice", "password": "wonderland"})
	if r.status != http.StatusOK || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("login: got %d %s, Cache-Control %q; want 200, no-store", r.status, r.body, r.header.Get("Cache-Control"))
	}
	login := r.answer(t)
	if login.TokenType != "Bearer" || login.ExpiresIn != int64(accessLifetime/time.Second) || login.AccessToken == "" || login.RefreshToken == "" {
		t.Fatalf("login: got %s; want both tokens, Bearer, %d", r.body, int64(accessLifetime/time.Second))
	}

	f.clock.Step(time.Minute)
	r = f.postJSON(f.policy, "refresh", map[string]string{"refresh_token": login.RefreshToken})
	if r.status != http.StatusOK {
		t.Fatalf("refresh: got %d %s; want 200", r.status, r.body)
	}
	refreshed := r.answer(t)
	if c, err := f.policy.Codec.VerifyRefresh(refreshed.RefreshToken); err != nil || c.Generation != 1 {
		t.Fatalf("refresh: got claims %+v, %v; want generation 1", c, err)
	}

	r = f.postJSON(f.policy, "logout", map[string]string{"refresh_token": refreshed.RefreshToken})
	if r.status != http.StatusOK || r.object(t)["status"] != "logged out" {
		t.Fatalf("logout: got %d %s; want 200 logged out", r.status, r.body)
	}
	expectError(t, f.postJSON(f.policy, "refresh", map[string]string{"refresh_token": refreshed.RefreshToken}), http.StatusUnauthorized, "invalid_grant")
	if got := f.introspect(f.policy, refreshed.AccessToken); got["active"] != false {
		t.Errorf("got introspection %v after logout; want inactive", got)
	}
	// Logging out twice is not an error.
	if r := f.postJSON(f.policy, "logout", map[string]string{"refresh_token": refreshed.RefreshToken}); r.status != http.StatusOK {
		t.Errorf("second logout: got %d %s; want 200", r.status, r.body)
	}
}

// TestJSONAPIRefusals: each refusal gets its status and error, and leaves alice's session as it was.
func TestJSONAPIRefusals(t *testing.T) {
	f := newFixture(t, options{})
	otherAccess, otherRefresh := f.mint(f.other, "alice")
	type call struct {
		endpoint, contentType, body string
	}
	tests := []struct {
		name   string
		call   func(legit answer) call
		status int
		code   string
	}{
		{"a wrong password is unauthorized", func(answer) call {
			return call{"login", "application/json", `{"username":"alice","password":"guess"}`}
		}, 401, "invalid_grant"},
		{"an unknown user is unauthorized", func(answer) call {
			return call{"login", "application/json", `{"username":"mallory","password":"guess"}`}
		}, 401, "invalid_grant"},
		{"a login without a password is a bad request", func(answer) call {
			return call{"login", "application/json", `{"username":"alice"}`}
		}, 400, "invalid_request"},
		{"a form body is an unsupported media type", func(answer) call {
			return call{"login", formType, "username=alice&password=wonderland"}
		}, 415, "invalid_request"},
		{"a body without a content type is an unsupported media type", func(a answer) call {
			return call{"refresh", "", `{"refresh_token":"` + a.RefreshToken + `"}`}
		}, 415, "invalid_request"},
		{"malformed JSON is a bad request", func(answer) call {
			return call{"login", "application/json", `{"username":"alice",`}
		}, 400, "invalid_request"},
		{"a number for a username is a bad request", func(answer) call {
			return call{"login", "application/json", `{"username":1,"password":"wonderland"}`}
		}, 400, "invalid_request"},
		{"two JSON values are a bad request", func(a answer) call {
			return call{"refresh", "application/json", `{"refresh_token":"` + a.RefreshToken + `"} {}`}
		}, 400, "invalid_request"},
		{"a JSON array is a bad request", func(answer) call {
			return call{"login", "application/json", `["alice","wonderland"]`}
		}, 400, "invalid_request"},
		{"an oversize body is too large", func(answer) call {
			return call{"login", "application/json", `{"username":"alice","password":"` + strings.Repeat("x", issuer.DefaultMaxBodyBytes) + `"}`}
		}, 413, "invalid_request"},
		{"a refresh without a token is a bad request", func(answer) call {
			return call{"refresh", "application/json", `{}`}
		}, 400, "invalid_request"},
		{"a refresh with an access token is unauthorized", func(a answer) call {
			return call{"refresh", "application/json", `{"refresh_token":"` + a.AccessToken + `"}`}
		}, 401, "invalid_grant"},
		{"a refresh with a forged token is unauthorized", func(a answer) call {
			return call{"refresh", "application/json", `{"refresh_token":"` + tampered(t, a.RefreshToken, "sub", "bob") + `"}`}
		}, 401, "invalid_grant"},
		{"a refresh with an alg:none token is unauthorized", func(a answer) call {
			return call{"refresh", "application/json", `{"refresh_token":"` + unsigned(t, a.RefreshToken) + `"}`}
		}, 401, "invalid_grant"},
		{"a refresh with another policy's token is unauthorized", func(answer) call {
			return call{"refresh", "application/json", `{"refresh_token":"` + otherRefresh + `"}`}
		}, 401, "invalid_grant"},
		{"a logout with an access token is unauthorized", func(a answer) call {
			return call{"logout", "application/json", `{"refresh_token":"` + a.AccessToken + `"}`}
		}, 401, "invalid_grant"},
		{"a logout with another policy's token is unauthorized", func(answer) call {
			return call{"logout", "application/json", `{"refresh_token":"` + otherAccess + `"}`}
		}, 401, "invalid_grant"},
		{"a logout with a forged token is unauthorized", func(a answer) call {
			return call{"logout", "application/json", `{"refresh_token":"` + tampered(t, a.RefreshToken, "sid", "AAAAAAAAAAAAAAAAAAAAAA") + `"}`}
		}, 401, "invalid_grant"},
		{"a logout without a token is a bad request", func(answer) call {
			return call{"logout", "application/json", `{"refresh_token":""}`}
		}, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := f.with(t)
			legit := f.login()
			c := tt.call(legit)
			r := f.do(http.MethodPost, f.policy.Issuer+"/"+c.endpoint, c.contentType, strings.NewReader(c.body), nil)
			expectError(t, r, tt.status, tt.code)
			f.mustRefresh(legit.RefreshToken)
		})
	}
	t.Run("a policy without users does not support login", func(t *testing.T) {
		f := f.with(t)
		expectError(t, f.postJSON(f.other, "login", map[string]string{"username": "alice", "password": "wonderland"}),
			http.StatusBadRequest, "unsupported_grant_type")
	})
}

func TestJSONLogoutFailsClosed(t *testing.T) {
	f := newFixture(t, options{})
	a := f.login()
	f.store.fail(revocation.ErrUnavailable)
	expectError(t, f.postJSON(f.policy, "logout", map[string]string{"refresh_token": a.RefreshToken}),
		http.StatusServiceUnavailable, "temporarily_unavailable")
	expectError(t, f.postJSON(f.policy, "refresh", map[string]string{"refresh_token": a.RefreshToken}),
		http.StatusServiceUnavailable, "temporarily_unavailable")
	f.store.fail(nil)
	f.mustRefresh(a.RefreshToken)
}

package issuer_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

func TestRevokeEndsTheSession(t *testing.T) {
	tests := []struct {
		name string
		form func(a answer) url.Values
	}{
		{"a refresh token", func(a answer) url.Values { return url.Values{"token": {a.RefreshToken}} }},
		{"a refresh token with its hint", func(a answer) url.Values {
			return url.Values{"token": {a.RefreshToken}, "token_type_hint": {"refresh_token"}}
		}},
		{"an access token", func(a answer) url.Values { return url.Values{"token": {a.AccessToken}} }},
		{"an access token with its hint", func(a answer) url.Values {
			return url.Values{"token": {a.AccessToken}, "token_type_hint": {"access_token"}}
		}},
		{"an access token with the wrong hint", func(a answer) url.Values {
			return url.Values{"token": {a.AccessToken}, "token_type_hint": {"refresh_token"}}
		}},
		{"a refresh token with an unknown hint", func(a answer) url.Values {
			return url.Values{"token": {a.RefreshToken}, "token_type_hint": {"id_token"}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, options{})
			a := f.login()
			r := f.postForm(f.policy, "revoke", tt.form(a), nil)
			if r.status != http.StatusOK || len(r.body) != 0 {
				t.Fatalf("got %d %q; want 200 and no body", r.status, r.body)
			}
			expectError(t, f.refresh(a.RefreshToken), http.StatusBadRequest, "invalid_grant")
			if got := f.introspect(f.policy, a.AccessToken); got["active"] != false {
				t.Errorf("got introspection %v of the access token; want inactive", got)
			}
		})
	}
}

// TestRevokeAcceptsTokensItCannotRevoke: RFC 7009 section 2.2 answers 200 for invalid tokens, and nothing
// changes.
func TestRevokeAcceptsTokensItCannotRevoke(t *testing.T) {
	f := newFixture(t, options{})
	// The other policy logs alice in too, here, so that its session is one it could have.
	f.other.Object.Spec.Login.PasswordSecretName, f.other.Users = "users", users()
	otherAccess, otherRefresh := f.mint(f.other, "alice")
	tests := []struct {
		name  string
		token func(a answer) string
	}{
		{"garbage", func(answer) string { return "garbage" }},
		{"a forged refresh token", func(a answer) string { return tampered(t, a.RefreshToken, "sub", "bob") }},
		{"an alg:none refresh token", func(a answer) string { return unsigned(t, a.RefreshToken) }},
		{"another policy's refresh token", func(answer) string { return otherRefresh }},
		{"another policy's access token", func(answer) string { return otherAccess }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := f.with(t)
			a := f.login()
			if r := f.postForm(f.policy, "revoke", url.Values{"token": {tt.token(a)}}, nil); r.status != http.StatusOK {
				t.Fatalf("got %d %s; want 200", r.status, r.body)
			}
			f.mustRefresh(a.RefreshToken)
		})
	}
	// The other policy's session is untouched by a revocation sent to this one.
	if got := f.introspect(f.other, otherAccess); got["active"] != true {
		t.Errorf("got introspection %v of the other policy's token; want active", got)
	}
}

func TestRevokeRefusals(t *testing.T) {
	f := newFixture(t, options{})
	a := f.login()
	expectError(t, f.postForm(f.policy, "revoke", url.Values{"token_type_hint": {"refresh_token"}}, nil), http.StatusBadRequest, "invalid_request")
	expectError(t, f.do(http.MethodPost, f.policy.Issuer+"/revoke", "application/json", strings.NewReader(`{"token":"`+a.RefreshToken+`"}`), nil),
		http.StatusBadRequest, "invalid_request")
	expectError(t, f.do(http.MethodPost, "/apps/nope/revoke", formType, strings.NewReader("token="+a.RefreshToken), nil),
		http.StatusNotFound, "not_found")
	f.mustRefresh(a.RefreshToken)
}

func TestRevokeFailsClosed(t *testing.T) {
	f := newFixture(t, options{})
	a := f.login()
	f.store.fail(revocation.ErrShardFull)
	expectError(t, f.postForm(f.policy, "revoke", url.Values{"token": {a.RefreshToken}}, nil), http.StatusServiceUnavailable, "temporarily_unavailable")
	f.store.fail(nil)
	if got := f.introspect(f.policy, a.AccessToken); got["active"] != true {
		t.Errorf("got introspection %v after a failed revocation; want still active", got)
	}
	if r := f.postForm(f.policy, "revoke", url.Values{"token": {a.RefreshToken}}, nil); r.status != http.StatusOK {
		t.Fatalf("retry: got %d %s; want 200", r.status, r.body)
	}
	expectError(t, f.refresh(a.RefreshToken), http.StatusBadRequest, "invalid_grant")
}

package issuer_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/issuer"
)

func TestPasswordGrantIssuesAccessAndRefreshTokens(t *testing.T) {
	f := newFixture(t, options{})
	r := f.postForm(f.policy, "token", url.Values{"grant_type": {"password"}, "username": {"alice"},
		"password": {"wonderland"}, "client_id": {"billing-web"}}, nil)
	if r.status != http.StatusOK {
		t.Fatalf("got %d %s; want 200", r.status, r.body)
	}
	for h, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"} {
		if got := r.header.Get(h); got != want {
			t.Errorf("got %s %q; want %q", h, got, want)
		}
	}
	a := r.answer(t)
	if a.TokenType != "Bearer" || a.ExpiresIn != int64(accessLifetime/time.Second) || a.Scope != "" || a.IssuedTokenType != "" {
		t.Errorf("got token_type %q, expires_in %d, scope %q, issued_token_type %q; want Bearer, %d, none, none",
			a.TokenType, a.ExpiresIn, a.Scope, a.IssuedTokenType, int64(accessLifetime/time.Second))
	}
	access, err := f.policy.Codec.VerifyAccess(a.AccessToken)
	if err != nil {
		t.Fatalf("verify access token: %v", err)
	}
	refresh, err := f.policy.Codec.VerifyRefresh(a.RefreshToken)
	if err != nil {
		t.Fatalf("verify refresh token: %v", err)
	}
	if access.Subject != "alice" || access.ClientID != "billing-web" || access.SessionID != refresh.SessionID {
		t.Errorf("got access sub %q client_id %q sid %q; want alice, billing-web, the refresh token's %q",
			access.Subject, access.ClientID, access.SessionID, refresh.SessionID)
	}
	if refresh.Generation != 0 || !refresh.AuthTime.Time().Equal(t0) || !refresh.ExpiresAt.Time().Equal(t0.Add(sessionLife)) {
		t.Errorf("got refresh gen %d auth_time %v exp %v; want 0, %v, %v", refresh.Generation, refresh.AuthTime.Time(),
			refresh.ExpiresAt.Time(), t0, t0.Add(sessionLife))
	}
	if got := f.metric("tokenwarden_issuer_logins_total", "grant", "password", "outcome", "ok"); got != 1 {
		t.Errorf("got %v ok password logins counted; want 1", got)
	}
}

func TestPasswordGrantGivesWrongPasswordAndUnknownUserTheSameAnswer(t *testing.T) {
	f := newFixture(t, options{})
	wrong := f.postForm(f.policy, "token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"guess"}}, nil)
	unknown := f.postForm(f.policy, "token", url.Values{"grant_type": {"password"}, "username": {"mallory"}, "password": {"guess"}}, nil)
	expectError(t, wrong, http.StatusBadRequest, "invalid_grant")
	if !bytes.Equal(wrong.body, unknown.body) || wrong.status != unknown.status {
		t.Errorf("got %d %s for an unknown user; want the wrong password's %d %s", unknown.status, unknown.body, wrong.status, wrong.body)
	}
	if got := f.metric("tokenwarden_issuer_logins_total", "grant", "password", "outcome", "invalid"); got != 2 {
		t.Errorf("got %v refused logins counted; want 2", got)
	}
}

// TestTokenEndpointRefusals sends malformed and forged requests, each of which must get its RFC 6749 error
// and leave the session's state as it was: the legitimate refresh token still refreshes afterwards.
func TestTokenEndpointRefusals(t *testing.T) {
	f := newFixture(t, options{})
	type request struct {
		contentType string
		body        string
		header      http.Header
	}
	form := func(kv ...string) request {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return request{contentType: formType, body: v.Encode()}
	}
	otherAccess, otherRefresh := f.mint(f.other, "alice")
	tests := []struct {
		name   string
		req    func(legit answer) request
		status int
		code   string
	}{
		{"a JSON body is refused", func(a answer) request {
			return request{contentType: "application/json", body: `{"grant_type":"refresh_token","refresh_token":"` + a.RefreshToken + `"}`}
		}, 400, "invalid_request"},
		{"a body without a content type is refused", func(a answer) request {
			return request{body: "grant_type=refresh_token&refresh_token=" + a.RefreshToken}
		}, 400, "invalid_request"},
		{"a body over the limit is refused as too large", func(a answer) request {
			return request{contentType: formType, body: "grant_type=refresh_token&refresh_token=" + a.RefreshToken + "&pad=" + strings.Repeat("a", issuer.DefaultMaxBodyBytes)}
		}, 413, "invalid_request"},
		{"a body that is not form encoding is refused", func(answer) request {
			return request{contentType: formType, body: "grant_type=%zz"}
		}, 400, "invalid_request"},
		{"a request without grant_type is refused", func(a answer) request { return form("refresh_token", a.RefreshToken) }, 400, "invalid_request"},
		{"an unknown grant type is unsupported", func(a answer) request {
			return form("grant_type", "authorization_code", "code", a.RefreshToken)
		}, 400, "unsupported_grant_type"},
		{"client credentials are unsupported", func(answer) request { return form("grant_type", "client_credentials") }, 400, "unsupported_grant_type"},
		{"a repeated parameter is refused", func(a answer) request {
			return form("grant_type", "refresh_token", "refresh_token", a.RefreshToken, "refresh_token", a.RefreshToken)
		}, 400, "invalid_request"},
		{"parameters in the URL are not read", func(a answer) request {
			return request{contentType: formType, header: http.Header{"X-Query": {"grant_type=refresh_token&refresh_token=" + a.RefreshToken}}}
		}, 400, "invalid_request"},
		{"a requested scope is invalid", func(a answer) request {
			return form("grant_type", "refresh_token", "refresh_token", a.RefreshToken, "scope", "admin")
		}, 400, "invalid_scope"},
		{"a client secret cannot authenticate a client", func(a answer) request {
			return form("grant_type", "refresh_token", "refresh_token", a.RefreshToken, "client_id", "web", "client_secret", "s3cret")
		}, 401, "invalid_client"},
		{"basic authentication with a secret cannot authenticate a client", func(a answer) request {
			r := form("grant_type", "refresh_token", "refresh_token", a.RefreshToken)
			r.header = http.Header{"Authorization": {"Basic d2ViOnMzY3JldA=="}} // web:s3cret
			return r
		}, 401, "invalid_client"},
		{"bearer credentials cannot authenticate a client", func(a answer) request {
			r := form("grant_type", "refresh_token", "refresh_token", a.RefreshToken)
			r.header = bearer(a.AccessToken)
			return r
		}, 401, "invalid_client"},
		{"a client_id with control characters is refused", func(a answer) request {
			return form("grant_type", "refresh_token", "refresh_token", a.RefreshToken, "client_id", "web\n")
		}, 400, "invalid_request"},
		{"a refresh grant without a refresh token is refused", func(answer) request { return form("grant_type", "refresh_token") }, 400, "invalid_request"},
		{"a garbage refresh token is an invalid grant", func(answer) request {
			return form("grant_type", "refresh_token", "refresh_token", "not-a-token")
		}, 400, "invalid_grant"},
		{"a refresh token with a forged generation is an invalid grant", func(a answer) request {
			return form("grant_type", "refresh_token", "refresh_token", tampered(t, a.RefreshToken, "gen", 7))
		}, 400, "invalid_grant"},
		{"a refresh token for another subject is an invalid grant", func(a answer) request {
			return form("grant_type", "refresh_token", "refresh_token", tampered(t, a.RefreshToken, "sub", "bob"))
		}, 400, "invalid_grant"},
		{"an unsigned alg:none refresh token is an invalid grant", func(a answer) request {
			return form("grant_type", "refresh_token", "refresh_token", unsigned(t, a.RefreshToken))
		}, 400, "invalid_grant"},
		{"an access token is not a refresh token", func(a answer) request {
			return form("grant_type", "refresh_token", "refresh_token", a.AccessToken)
		}, 400, "invalid_grant"},
		{"a refresh token of another policy is an invalid grant", func(answer) request {
			return form("grant_type", "refresh_token", "refresh_token", otherRefresh)
		}, 400, "invalid_grant"},
		{"an access token of another policy is an invalid grant", func(answer) request {
			return form("grant_type", "refresh_token", "refresh_token", otherAccess)
		}, 400, "invalid_grant"},
		{"a refresh token presented by another client is an invalid grant", func(a answer) request {
			return form("grant_type", "refresh_token", "refresh_token", a.RefreshToken, "client_id", "intruder")
		}, 400, "invalid_grant"},
		{"a password grant without a password is refused", func(answer) request {
			return form("grant_type", "password", "username", "alice")
		}, 400, "invalid_request"},
		{"a password grant with an empty password is refused", func(answer) request {
			return form("grant_type", "password", "username", "alice", "password", "")
		}, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := f.with(t)
			legit := f.clientLogin("web")
			req := tt.req(legit)
			target := f.policy.Issuer + "/token"
			if q := req.header.Get("X-Query"); q != "" {
				target += "?" + q
			}
			r := f.do(http.MethodPost, target, req.contentType, strings.NewReader(req.body), req.header)
			expectError(t, r, tt.status, tt.code)
			if tt.status == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("got no WWW-Authenticate header with 401")
			}
			f.clientRefresh(legit.RefreshToken, "web")
		})
	}
}

// clientLogin logs alice in as client id.
func (f *fixture) clientLogin(id string) answer {
	f.t.Helper()
	r := f.postForm(f.policy, "token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}, "client_id": {id}}, nil)
	if r.status != http.StatusOK {
		f.t.Fatalf("login: got %d %s; want 200", r.status, r.body)
	}
	return r.answer(f.t)
}

// clientRefresh refreshes rt as client id and fails the test unless it succeeds.
func (f *fixture) clientRefresh(rt, id string) answer {
	f.t.Helper()
	r := f.postForm(f.policy, "token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {id}}, nil)
	if r.status != http.StatusOK {
		f.t.Fatalf("the legitimate refresh: got %d %s; want 200", r.status, r.body)
	}
	return r.answer(f.t)
}

func TestTokenEndpointAnswersUnknownPoliciesWithNotFound(t *testing.T) {
	f := newFixture(t, options{})
	r := f.do(http.MethodPost, "/apps/nope/token", formType, strings.NewReader("grant_type=password&username=alice&password=wonderland"), nil)
	expectError(t, r, http.StatusNotFound, "not_found")
}

func TestPasswordGrantIsUnsupportedWithoutUsers(t *testing.T) {
	f := newFixture(t, options{})
	r := f.postForm(f.other, "token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}}, nil)
	expectError(t, r, http.StatusBadRequest, "unsupported_grant_type")
}

func TestRefreshRotatesGenerations(t *testing.T) {
	f := newFixture(t, options{})
	a0 := f.login()
	f.clock.Step(20 * time.Minute)
	a1 := f.mustRefresh(a0.RefreshToken)
	c1, err := f.policy.Codec.VerifyRefresh(a1.RefreshToken)
	if err != nil {
		t.Fatalf("verify the new refresh token: %v", err)
	}
	c0, _ := f.policy.Codec.VerifyRefresh(a0.RefreshToken)
	if c1.Generation != 1 || c1.SessionID != c0.SessionID || c1.AuthTime != c0.AuthTime || c1.ExpiresAt != c0.ExpiresAt {
		t.Errorf("got gen %d sid %s auth_time %d exp %d; want 1 and the session's %s %d %d",
			c1.Generation, c1.SessionID, c1.AuthTime, c1.ExpiresAt, c0.SessionID, c0.AuthTime, c0.ExpiresAt)
	}
	if !c1.IssuedAt.Time().Equal(t0.Add(20 * time.Minute)) {
		t.Errorf("got iat %v; want now, %v", c1.IssuedAt.Time(), t0.Add(20*time.Minute))
	}
	if _, err := f.policy.Codec.VerifyAccess(a1.AccessToken); err != nil {
		t.Errorf("verify the new access token: %v", err)
	}
	a2 := f.mustRefresh(a1.RefreshToken)
	if c2, _ := f.policy.Codec.VerifyRefresh(a2.RefreshToken); c2 == nil || c2.Generation != 2 {
		t.Errorf("got the second refresh's generation %v; want 2", c2)
	}
	if got := f.metric("tokenwarden_issuer_refreshes_total", "outcome", "ok"); got != 2 {
		t.Errorf("got %v ok refreshes counted; want 2", got)
	}
}

// TestReplayedRefreshTokenRevokesTheSession: refresh twice, then present generation 0 again.
func TestReplayedRefreshTokenRevokesTheSession(t *testing.T) {
	f := newFixture(t, options{})
	a0 := f.login()
	sid := claims(t, a0.RefreshToken)["sid"].(string)
	f.clock.Step(time.Second)
	a1 := f.mustRefresh(a0.RefreshToken)
	f.clock.Step(time.Second)
	a2 := f.mustRefresh(a1.RefreshToken)

	expectError(t, f.refresh(a0.RefreshToken), http.StatusBadRequest, "invalid_grant")
	expectError(t, f.refresh(a2.RefreshToken), http.StatusBadRequest, "invalid_grant") // the latest is revoked too
	if got := f.introspect(f.policy, a2.AccessToken); got["active"] != false {
		t.Errorf("got introspection %v of the latest access token; want inactive", got)
	}

	select {
	case ev := <-f.events.Events:
		if !strings.HasPrefix(ev, "Warning "+v1alpha1.EventRefreshTokenReuse+" ") || !strings.Contains(ev, sid) {
			t.Errorf("got event %q; want a Warning %s naming session %s", ev, v1alpha1.EventRefreshTokenReuse, sid)
		}
		for _, tok := range []string{a0.RefreshToken, a1.RefreshToken, a2.RefreshToken} {
			if strings.Contains(ev, tok) {
				t.Errorf("got a token in event %q", ev)
			}
		}
	default:
		t.Errorf("got no event; want %s", v1alpha1.EventRefreshTokenReuse)
	}
	if got := f.metric("tokenwarden_issuer_refresh_token_reuse_total", "namespace", "apps", "policy", "billing"); got != 1 {
		t.Errorf("got %v reuse detections counted; want 1", got)
	}
	if got := f.metric("tokenwarden_issuer_refreshes_total", "outcome", "reuse"); got != 1 {
		t.Errorf("got %v reuse refreshes counted; want 1", got)
	}
	if got := f.metric("tokenwarden_issuer_refreshes_total", "outcome", "revoked"); got != 1 {
		t.Errorf("got %v revoked refreshes counted; want 1", got)
	}
}

// TestGraceDuplicateGetsTheSameAnswer: with deterministic signatures, a duplicate inside the grace period is
// byte-for-byte the first answer, so a client that lost it cannot tell.
func TestGraceDuplicateGetsTheSameAnswer(t *testing.T) {
	for _, alg := range []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.HS256} {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, options{alg: alg, grace: 10 * time.Second})
			a0 := f.login()
			f.clock.Step(2 * time.Second)
			first := f.refresh(a0.RefreshToken)
			f.clock.Step(3 * time.Second)
			again := f.refresh(a0.RefreshToken)
			if first.status != http.StatusOK || !bytes.Equal(first.body, again.body) {
				t.Fatalf("got %d %s, then %d %s; want the same 200 answer twice", first.status, first.body, again.status, again.body)
			}
			if got := f.metric("tokenwarden_issuer_refreshes_total", "outcome", "grace"); got != 1 {
				t.Errorf("got %v grace refreshes counted; want 1", got)
			}
			f.mustRefresh(first.answer(t).RefreshToken) // the one successor goes on

			// Outside the grace period the same replay is reuse.
			f.clock.Step(11 * time.Second)
			expectError(t, f.refresh(a0.RefreshToken), http.StatusBadRequest, "invalid_grant")
		})
	}
}

func TestRefreshAfterTheSessionEndsIsAnInvalidGrant(t *testing.T) {
	f := newFixture(t, options{})
	a := f.login()
	f.clock.Step(sessionLife)
	expectError(t, f.refresh(a.RefreshToken), http.StatusBadRequest, "invalid_grant")
}

func TestRefreshAfterTheIdleTimeoutIsAnInvalidGrant(t *testing.T) {
	f := newFixture(t, options{idle: time.Hour})
	a := f.login()
	f.clock.Step(50 * time.Minute)
	a = f.mustRefresh(a.RefreshToken)
	f.clock.Step(61 * time.Minute)
	expectError(t, f.refresh(a.RefreshToken), http.StatusBadRequest, "invalid_grant")
	if got := f.metric("tokenwarden_issuer_refreshes_total", "outcome", "expired"); got != 1 {
		t.Errorf("got %v expired refreshes counted; want 1", got)
	}
}

// TestRefreshFailsClosed: when the store cannot decide, no token is issued, and the refresh token is as
// good as before once the store is back.
func TestRefreshFailsClosed(t *testing.T) {
	for _, err := range []error{revocation.ErrUnavailable, revocation.ErrShardFull} {
		t.Run(err.Error(), func(t *testing.T) {
			f := newFixture(t, options{})
			a := f.login()
			f.store.fail(err)
			r := f.refresh(a.RefreshToken)
			expectError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
			if r.header.Get("Retry-After") == "" {
				t.Errorf("got no Retry-After with 503")
			}
			f.store.fail(nil)
			f.mustRefresh(a.RefreshToken)
			if got := f.metric("tokenwarden_issuer_refreshes_total", "outcome", "unavailable"); got != 1 {
				t.Errorf("got %v unavailable refreshes counted; want 1", got)
			}
		})
	}
}

func TestPublicClientMayNameItselfWithBasicAuthentication(t *testing.T) {
	f := newFixture(t, options{})
	r := f.postForm(f.policy, "token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}},
		http.Header{"Authorization": {"Basic d2ViOg=="}}) // web: (no secret)
	if r.status != http.StatusOK {
		t.Fatalf("got %d %s; want 200", r.status, r.body)
	}
	if got := claims(t, r.answer(t).AccessToken)["client_id"]; got != "web" {
		t.Errorf("got client_id %v; want web", got)
	}
	r = f.postForm(f.policy, "token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}, "client_id": {"cli"}},
		http.Header{"Authorization": {"Basic d2ViOg=="}})
	expectError(t, r, http.StatusBadRequest, "invalid_request")
}

func TestTokenExchange(t *testing.T) {
	f := newFixture(t, options{})
	iss := f.policy.Issuer
	exchange := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}}
		for i := 0; i+1 < len(kv); i += 2 {
			v[kv[i]] = append(v[kv[i]][:0:0], kv[i+1])
		}
		return v
	}
	t.Run("a listed ServiceAccount gets tokens for itself", func(t *testing.T) {
		f := f.with(t)
		r := f.postForm(f.policy, "token", exchange("subject_token", saToken("apps", "worker", iss)), nil)
		if r.status != http.StatusOK {
			t.Fatalf("got %d %s; want 200", r.status, r.body)
		}
		a := r.answer(t)
		if a.IssuedTokenType != "urn:ietf:params:oauth:token-type:access_token" || a.TokenType != "Bearer" {
			t.Errorf("got issued_token_type %q token_type %q; want the access token type and Bearer", a.IssuedTokenType, a.TokenType)
		}
		c, err := f.policy.Codec.VerifyAccess(a.AccessToken)
		if err != nil || c.Subject != "system:serviceaccount:apps:worker" {
			t.Fatalf("got access claims %+v, %v; want sub system:serviceaccount:apps:worker", c, err)
		}
		f.mustRefresh(a.RefreshToken)
		if got := f.metric("tokenwarden_issuer_logins_total", "grant", "urn:ietf:params:oauth:grant-type:token-exchange", "outcome", "ok"); got != 1 {
			t.Errorf("got %v exchanges counted; want 1", got)
		}
	})
	t.Run("every ServiceAccount of a namespace listed with * may exchange", func(t *testing.T) {
		f := f.with(t)
		r := f.postForm(f.policy, "token", exchange("subject_token", saToken("batch", "nightly", iss), "audience", audience), nil)
		if r.status != http.StatusOK {
			t.Fatalf("got %d %s; want 200", r.status, r.body)
		}
	})
	tests := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"a ServiceAccount the policy does not list is refused", exchange("subject_token", saToken("apps", "intruder", iss)), 400, "invalid_request"},
		{"a token for another audience is refused", exchange("subject_token", saToken("apps", "worker", "https://kubernetes.default.svc")), 400, "invalid_request"},
		{"a subject token that is not a ServiceAccount token is refused", exchange("subject_token", "eyJhbGciOi.x.y"), 400, "invalid_request"},
		{"a subject token type other than jwt is refused", exchange("subject_token", saToken("apps", "worker", iss),
			"subject_token_type", "urn:ietf:params:oauth:token-type:access_token"), 400, "invalid_request"},
		{"a missing subject token is refused", exchange(), 400, "invalid_request"},
		{"delegation is refused", exchange("subject_token", saToken("apps", "worker", iss), "actor_token", saToken("apps", "worker", iss),
			"actor_token_type", "urn:ietf:params:oauth:token-type:jwt"), 400, "invalid_request"},
		{"a refresh token cannot be requested as the issued token", exchange("subject_token", saToken("apps", "worker", iss),
			"requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"), 400, "invalid_request"},
		{"an audience outside the policy is an invalid target", exchange("subject_token", saToken("apps", "worker", iss),
			"audience", "https://elsewhere.example.com"), 400, "invalid_target"},
		{"a review that cannot be made is temporarily unavailable", exchange("subject_token", reviewDown), 503, "temporarily_unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := f.with(t)
			expectError(t, f.postForm(f.policy, "token", tt.form, nil), tt.status, tt.code)
		})
	}
	t.Run("a policy without ServiceAccounts does not support the grant", func(t *testing.T) {
		f := f.with(t)
		r := f.postForm(f.other, "token", exchange("subject_token", saToken("apps", "worker", f.other.Issuer)), nil)
		expectError(t, r, http.StatusBadRequest, "unsupported_grant_type")
	})
}

func TestPolicyRoutesFollowTheExternalURLPath(t *testing.T) {
	f := newFixture(t, options{prefix: "/auth"})
	if !strings.HasSuffix(f.policy.Issuer, "/auth/apps/billing") {
		t.Fatalf("fixture issuer %s does not end in /auth/apps/billing", f.policy.Issuer)
	}
	f.login()
	if r := f.do(http.MethodPost, "/apps/billing/token", formType, strings.NewReader("grant_type=password"), nil); r.status != http.StatusNotFound {
		t.Errorf("got %d without the prefix; want 404", r.status)
	}
	if r := f.do(http.MethodGet, "/healthz", "", nil, nil); r.status != http.StatusOK {
		t.Errorf("got /healthz %d; want 200 at the root", r.status)
	}
}

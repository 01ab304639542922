package integration

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// TestStandardClientsWorkUnmodified drives the issuer with golang.org/x/oauth2 and verifies its access
// tokens with github.com/coreos/go-oidc/v3, as an app and a resource server would.
func TestStandardClientsWorkUnmodified(t *testing.T) {
	for _, alg := range []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.RS256} {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, 0, func(s *v1alpha1.TokenPolicySpec) { s.Signing.Algorithm = alg })
			r := startReplica(t, f.clock, true) // its external URL is its own address, so discovery is reachable
			f.replicas = append(f.replicas, r)
			f.waitServed(r)
			iss := r.base + f.path()
			ctx := context.Background()

			cfg := &oauth2.Config{ClientID: "payments-web", Endpoint: oauth2.Endpoint{TokenURL: iss + "/token", AuthStyle: oauth2.AuthStyleInParams}}
			tok, err := cfg.PasswordCredentialsToken(ctx, "alice", "wonderland")
			if err != nil {
				t.Fatalf("oauth2 password grant: %v", err)
			}
			if tok.RefreshToken == "" || tok.TokenType != "Bearer" || tok.Expiry.IsZero() {
				t.Fatalf("oauth2 token: type %q, refresh token set %v, expiry %v; want Bearer, a refresh token and an expiry", tok.TokenType, tok.RefreshToken != "", tok.Expiry)
			}

			// An expired token makes the TokenSource refresh with the refresh_token grant.
			expired := *tok
			expired.Expiry = time.Now().Add(-time.Minute)
			refreshed, err := cfg.TokenSource(ctx, &expired).Token()
			if err != nil {
				t.Fatalf("oauth2 TokenSource refresh: %v", err)
			}
			if refreshed.AccessToken == tok.AccessToken || refreshed.RefreshToken == tok.RefreshToken {
				t.Fatalf("the TokenSource got the same tokens back; want rotated ones")
			}

			provider, err := oidc.NewProvider(oidc.ClientContext(ctx, http.DefaultClient), iss)
			if err != nil {
				t.Fatalf("go-oidc discovery: %v", err)
			}
			verifier := provider.Verifier(&oidc.Config{ClientID: "payments-api", SupportedSigningAlgs: []string{string(alg)}, Now: f.clock.Now})
			idt, err := verifier.Verify(ctx, refreshed.AccessToken)
			if err != nil {
				t.Fatalf("go-oidc verification of an access token: %v", err)
			}
			if idt.Subject != "alice" || idt.Issuer != iss {
				t.Fatalf("verified claims: sub %q iss %q; want alice and %s", idt.Subject, idt.Issuer, iss)
			}
			// A refresh token is never an access token: its audience is the issuer itself.
			if _, err := verifier.Verify(ctx, refreshed.RefreshToken); err == nil {
				t.Fatalf("go-oidc accepted a refresh token for audience payments-api")
			}
		})
	}
}

// TestAServiceAccountExchangesItsToken uses a real ServiceAccount token from the TokenRequest API.
func TestAServiceAccountExchangesItsToken(t *testing.T) {
	f := newFixture(t, 1, nil)
	iss := externalURL + f.path()
	exchange := func(subjectToken string) response {
		return f.token(0, url.Values{
			"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token":      {subjectToken},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
		})
	}
	r := exchange(f.saToken("app", iss))
	if r.status != http.StatusOK || r.str("issued_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
		t.Fatalf("exchange of the allowed ServiceAccount's token: %d %s", r.status, r.body)
	}
	intro := f.introspect(0, f.saToken("introspector", iss), r.str("access_token"))
	if intro.json["active"] != true || intro.str("sub") != "system:serviceaccount:"+f.ns+":app" {
		t.Fatalf("introspection of the exchanged token: %s; want active, sub system:serviceaccount:%s:app", intro.body, f.ns)
	}
	for name, tok := range map[string]string{
		"a ServiceAccount the policy does not allow": f.saToken("introspector", iss),
		"a token for another audience":               f.saToken("app", "https://elsewhere.example"),
		"not a token":                                "garbage",
	} {
		if r := exchange(tok); r.status != http.StatusBadRequest || !strings.HasPrefix(r.str("error"), "invalid_") {
			t.Errorf("%s: %d %s; want 400 invalid_*", name, r.status, r.body)
		}
	}
	// Introspection itself refuses callers the policy does not name.
	if r := f.introspect(0, f.saToken("app", iss), r.str("access_token")); r.status != http.StatusForbidden {
		t.Errorf("introspection by a ServiceAccount not allowed to: %d %s; want 403", r.status, r.body)
	}
}

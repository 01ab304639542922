package issuer_test

import (
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// TestInteropGoOIDC verifies access tokens with github.com/coreos/go-oidc, which knows the issuer only by
// its discovery document and JWKS: what a resource server that verifies offline does.
func TestInteropGoOIDC(t *testing.T) {
	for _, alg := range []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.RS256} {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, options{alg: alg})
			ctx := oidc.ClientContext(t.Context(), f.ts.Client())
			provider, err := oidc.NewProvider(ctx, f.policy.Issuer)
			if err != nil {
				t.Fatalf("NewProvider: %v", err)
			}
			verifier := provider.Verifier(&oidc.Config{ClientID: audience, Now: f.clock.Now})
			a := f.login()
			tok, err := verifier.Verify(ctx, a.AccessToken)
			if err != nil {
				t.Fatalf("verify the access token: %v", err)
			}
			if tok.Subject != "alice" || tok.Issuer != f.policy.Issuer {
				t.Errorf("got sub %q iss %q; want alice, %s", tok.Subject, tok.Issuer, f.policy.Issuer)
			}
			if _, err := verifier.Verify(ctx, a.RefreshToken); err == nil {
				t.Errorf("got a refresh token verified as an access token; want it refused (its audience is the issuer)")
			}
			otherAccess, _ := f.mint(f.other, "alice")
			if _, err := verifier.Verify(ctx, otherAccess); err == nil {
				t.Errorf("got another policy's token verified; want it refused")
			}
			f.clock.Step(accessLifetime + time.Minute)
			if _, err := verifier.Verify(ctx, a.AccessToken); err == nil {
				t.Errorf("got an expired access token verified; want it refused")
			}
		})
	}
}

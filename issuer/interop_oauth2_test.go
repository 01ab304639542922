package issuer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// TestInteropGolangOAuth2 drives the token endpoint with golang.org/x/oauth2, a client written against
// RFC 6749 independently of this server, in each of its ways of naming a public client.
func TestInteropGolangOAuth2(t *testing.T) {
	styles := map[string]oauth2.AuthStyle{"in params": oauth2.AuthStyleInParams, "in header": oauth2.AuthStyleInHeader,
		"auto-detected": oauth2.AuthStyleAutoDetect}
	for name, style := range styles {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, options{})
			ctx := context.WithValue(t.Context(), oauth2.HTTPClient, f.ts.Client())
			cfg := &oauth2.Config{ClientID: "cli", Endpoint: oauth2.Endpoint{TokenURL: f.policy.Issuer + "/token", AuthStyle: style}}

			tok, err := cfg.PasswordCredentialsToken(ctx, "alice", "wonderland")
			if err != nil {
				t.Fatalf("PasswordCredentialsToken: %v", err)
			}
			if tok.TokenType != "Bearer" || tok.RefreshToken == "" || !tok.Expiry.After(time.Now()) {
				t.Fatalf("got token type %q, refresh token %t, expiry %v; want Bearer, a refresh token, a future expiry",
					tok.TokenType, tok.RefreshToken != "", tok.Expiry)
			}
			access, err := f.policy.Codec.VerifyAccess(tok.AccessToken)
			if err != nil || access.ClientID != "cli" || access.Subject != "alice" {
				t.Fatalf("got access claims %+v, %v; want alice's, for client cli", access, err)
			}

			// The package judges expiry by the real clock: hand it a token it believes expired, while the
			// server's clock passes the access token's end.
			f.clock.Step(accessLifetime + time.Minute)
			src := cfg.TokenSource(ctx, &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)})
			next, err := src.Token()
			if err != nil {
				t.Fatalf("refresh through TokenSource: %v", err)
			}
			refreshed, err := f.policy.Codec.VerifyRefresh(next.RefreshToken)
			if err != nil || refreshed.Generation != 1 || refreshed.SessionID != access.SessionID || refreshed.ClientID != "cli" {
				t.Fatalf("got refresh claims %+v, %v; want generation 1 of session %s for cli", refreshed, err, access.SessionID)
			}
			if _, err := f.policy.Codec.VerifyAccess(next.AccessToken); err != nil {
				t.Errorf("verify the refreshed access token: %v", err)
			}

			// Replaying generation 0 is reuse, reported as RFC 6749 says.
			stale := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)})
			if _, err := stale.Token(); errorCode(err) != "invalid_grant" {
				t.Errorf("got %v replaying generation 0; want invalid_grant", err)
			}
			if _, err := cfg.PasswordCredentialsToken(ctx, "alice", "guess"); errorCode(err) != "invalid_grant" {
				t.Errorf("got %v for a wrong password; want invalid_grant", err)
			}
		})
	}
}

func errorCode(err error) string {
	if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok {
		return re.ErrorCode
	}
	return ""
}

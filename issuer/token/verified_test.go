package token_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// TestARememberedAccessTokenIsStillJudgedByItsTimes verifies one token again and again, as a resource
// server introspecting it does: every answer is what a full verification would say.
func TestARememberedAccessTokenIsStillJudgedByItsTimes(t *testing.T) {
	f := newFixture(t, v1alpha1.EdDSA)
	raw, _, err := f.codec.MintAccess(f.session, 3, t0)
	if err != nil {
		t.Fatal(err)
	}
	first, err := f.codec.VerifyAccess(raw)
	if err != nil {
		t.Fatal(err)
	}
	first.Subject, first.Audience[0] = "mallory", "elsewhere" // the caller's copy is the caller's
	again, err := f.codec.VerifyAccess(raw)
	if err != nil || again.Subject != f.session.Subject || again.Audience[0] != audience || again.SessionID != f.session.ID {
		t.Fatalf("second verification: got %+v, %v; want the original claims", again, err)
	}
	// Still valid until exp plus the leeway, then expired, as the first verification would have said.
	f.clock.SetTime(t0.Add(lifetime + token.DefaultLeeway - time.Second))
	if _, err := f.codec.VerifyAccess(raw); err != nil {
		t.Fatalf("within the leeway after exp: %v; want valid", err)
	}
	f.clock.SetTime(t0.Add(lifetime + token.DefaultLeeway))
	if _, err := f.codec.VerifyAccess(raw); !errors.Is(err, token.ErrExpired) {
		t.Fatalf("at exp plus the leeway: got %v; want ErrExpired", err)
	}
	// A clock set back before iat (minus the leeway) makes it not yet valid again.
	f.clock.SetTime(t0.Add(-token.DefaultLeeway - time.Second))
	if _, err := f.codec.VerifyAccess(raw); !errors.Is(err, token.ErrNotYetValid) {
		t.Fatalf("before iat minus the leeway: got %v; want ErrNotYetValid", err)
	}
	// Another codec (another policy, or the same after a key change) remembers nothing of this one.
	other := f.newCodec(t, func(p *token.Policy) { p.Keys = f.set(t, f.retired, f.retired) })
	f.clock.SetTime(t0)
	if _, err := other.VerifyAccess(raw); !errors.Is(err, token.ErrUnknownKey) && !errors.Is(err, token.ErrSignature) {
		t.Fatalf("a codec without the signing key: got %v; want the token refused", err)
	}
}

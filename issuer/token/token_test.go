package token_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

const (
	issuer   = "https://tokenwarden.example.com/policies/apps/billing"
	audience = "https://api.example.com"
	lifetime = 15 * time.Minute
)

var (
	algorithms = []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.RS256, v1alpha1.HS256}
	// t0 is when the fixtures' tokens are minted and, unless a test moves it, verified.
	t0 = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

	sentinels = []error{
		token.ErrMalformed, token.ErrUnknownKey, token.ErrWrongType, token.ErrSignature,
		token.ErrWrongIssuer, token.ErrWrongAudience, token.ErrExpired, token.ErrNotYetValid,
	}
)

// testKeys are generated once per algorithm: RSA keys take a while. The third key is for impostors.
var testKeys = func() map[v1alpha1.SigningAlgorithm]func() ([]*keys.Key, error) {
	m := make(map[v1alpha1.SigningAlgorithm]func() ([]*keys.Key, error))
	for _, alg := range algorithms {
		m[alg] = sync.OnceValues(func() ([]*keys.Key, error) {
			var out []*keys.Key
			for range 3 {
				k, err := keys.Generate(alg)
				if err != nil {
					return nil, err
				}
				out = append(out, k)
			}
			return out, nil
		})
	}
	return m
}()

// fixture is one policy's codec with two keys, the first active, and a session to mint for.
type fixture struct {
	alg      v1alpha1.SigningAlgorithm
	active   *keys.Key
	retired  *keys.Key
	impostor *keys.Key // another policy's key that claims the active key's kid
	clock    *clocktesting.FakeClock
	codec    *token.Codec
	session  token.Session
}

func newFixture(t testing.TB, alg v1alpha1.SigningAlgorithm) *fixture {
	t.Helper()
	ks, err := testKeys[alg]()
	if err != nil {
		t.Fatalf("generate %s keys: %v", alg, err)
	}
	impostor := *ks[2]
	impostor.ID = ks[0].ID
	f := &fixture{
		alg:      alg,
		active:   ks[0],
		retired:  ks[1],
		impostor: &impostor,
		clock:    clocktesting.NewFakeClock(t0),
		session: token.Session{
			ID:       "Zm9vYmFyYmF6cXV4cXV1eA",
			Subject:  "system:serviceaccount:apps:billing",
			ClientID: "billing",
			AuthTime: t0.Add(-time.Hour),
			Expiry:   t0.Add(7 * 24 * time.Hour),
			Scope:    "invoices:read invoices:write",
			Binding:  &token.Binding{ServiceAccountUID: "0b4e9c1a-sa", PodUID: "5f1d2e3c-pod"},
		},
	}
	f.codec = f.newCodec(t, func(*token.Policy) {})
	return f
}

// policy is the fixture's policy with keys {active, retired}, active signing.
func (f *fixture) policy(t testing.TB) token.Policy {
	t.Helper()
	return token.Policy{
		Issuer:         issuer,
		Audiences:      []string{audience},
		AccessLifetime: lifetime,
		Keys:           f.set(t, f.active, f.active, f.retired),
	}
}

func (f *fixture) set(t testing.TB, active *keys.Key, all ...*keys.Key) *keys.Set {
	t.Helper()
	s, err := keys.NewSet(f.alg, active.ID, all)
	if err != nil {
		t.Fatalf("keys.NewSet: %v", err)
	}
	return s
}

// newCodec builds a codec of the fixture's policy as edit changes it, on the fixture's clock.
func (f *fixture) newCodec(t testing.TB, edit func(*token.Policy)) *token.Codec {
	t.Helper()
	p := f.policy(t)
	edit(&p)
	c, err := token.New(p, f.clock)
	if err != nil {
		t.Fatalf("token.New: %v", err)
	}
	return c
}

func (f *fixture) access(t testing.TB) string {
	t.Helper()
	raw, _, err := f.codec.MintAccess(f.session, 1, t0)
	if err != nil {
		t.Fatalf("MintAccess: %v", err)
	}
	return raw
}

func (f *fixture) refresh(t testing.TB) string {
	t.Helper()
	raw, _, err := f.codec.MintRefresh(f.session, 1, t0)
	if err != nil {
		t.Fatalf("MintRefresh: %v", err)
	}
	return raw
}

var b64 = base64.RawURLEncoding

// withPaddingBit sets the lowest bit of raw's last character. Every signature length here leaves spare
// low bits there, so a decoder that does not insist they be zero reads the same signature.
func withPaddingBit(raw string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, raw[len(raw)-1])
	return raw[:len(raw)-1] + string(alphabet[last|1])
}

// decode returns the header and the claims of raw, numbers kept as written.
func decode(t testing.TB, raw string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments; want 3", len(parts))
	}
	return decodeSegment(t, parts[0]), decodeSegment(t, parts[1])
}

func decodeSegment(t testing.TB, seg string) map[string]any {
	t.Helper()
	js, err := b64.DecodeString(seg)
	if err != nil {
		t.Fatalf("decode segment: %v", err)
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decode segment JSON: %v", err)
	}
	return m
}

// sign makes a token of header and claims by hand, signed with key under method.
func sign(t testing.TB, header, claims any, method jwt.SigningMethod, key any) string {
	t.Helper()
	s := segment(t, header) + "." + segment(t, claims)
	sig, err := method.Sign(s, key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s + "." + b64.EncodeToString(sig)
}

func segment(t testing.TB, v any) string {
	t.Helper()
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode segment: %v", err)
	}
	return b64.EncodeToString(js)
}

// forge re-signs genuine with the policy's active key after edit has changed its header and claims.
func (f *fixture) forge(t testing.TB, genuine string, edit func(header, claims map[string]any)) string {
	t.Helper()
	h, c := decode(t, genuine)
	edit(h, c)
	return sign(t, h, c, jwt.GetSigningMethod(string(f.alg)), f.active.SigningKey())
}

// checkRefusal fails t unless err is a refusal that wraps want, no other sentinel, and none of raw.
func checkRefusal(t *testing.T, raw string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("got error %v; want one wrapping %v", err, want)
	}
	if err == nil {
		return
	}
	var wrapped []error
	for _, s := range sentinels {
		if errors.Is(err, s) {
			wrapped = append(wrapped, s)
		}
	}
	if len(wrapped) != 1 {
		t.Errorf("got an error wrapping %v; want exactly one sentinel", wrapped)
	}
	if raw != "" && strings.Contains(err.Error(), raw) {
		t.Errorf("got an error that quotes the token; want none of it")
	}
	for _, seg := range strings.Split(raw, ".") {
		if len(seg) >= 16 && strings.Contains(err.Error(), seg) {
			t.Errorf("got an error that quotes a segment of the token; want none of it")
		}
	}
}

func TestMintedTokensVerify(t *testing.T) {
	for _, alg := range algorithms {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, alg)

			raw, minted, err := f.codec.MintAccess(f.session, 7, t0)
			if err != nil {
				t.Fatalf("MintAccess: %v", err)
			}
			want := &token.AccessClaims{
				Issuer:    issuer,
				Subject:   f.session.Subject,
				Audience:  []string{audience},
				ExpiresAt: token.NumericDate(t0.Add(lifetime).Unix()),
				IssuedAt:  token.NumericDate(t0.Unix()),
				AuthTime:  token.NumericDate(f.session.AuthTime.Unix()),
				ID:        minted.ID,
				ClientID:  f.session.ClientID,
				SessionID: f.session.ID,
				Scope:     f.session.Scope,
				// The session's end and the identity it was opened for travel with it.
				SessionExpiry: token.NumericDate(f.session.Expiry.Unix()),
				Binding:       &token.Binding{ServiceAccountUID: "0b4e9c1a-sa", PodUID: "5f1d2e3c-pod"},
			}
			if !reflect.DeepEqual(minted, want) {
				t.Errorf("MintAccess claims: got %+v; want %+v", minted, want)
			}
			if len(minted.ID) != 22 {
				t.Errorf("access jti %q: got %d characters; want 22", minted.ID, len(minted.ID))
			}
			verified, err := f.codec.VerifyAccess(raw)
			if err != nil {
				t.Fatalf("VerifyAccess: %v", err)
			}
			if !reflect.DeepEqual(verified, minted) {
				t.Errorf("VerifyAccess: got %+v; want what was minted, %+v", verified, minted)
			}
			checkHeader(t, raw, string(alg), f.active.ID, token.AccessType)
			// RFC 9068 resource servers read aud as an array; it stays one with a single audience.
			if js := payloadJSON(t, raw); !strings.Contains(js, `"aud":["`+audience+`"]`) {
				t.Errorf("access payload %s: got no aud array; want \"aud\":[%q]", js, audience)
			}

			raw, mintedRT, err := f.codec.MintRefresh(f.session, 7, t0)
			if err != nil {
				t.Fatalf("MintRefresh: %v", err)
			}
			wantRT := &token.RefreshClaims{
				Issuer:     issuer,
				Subject:    f.session.Subject,
				Audience:   []string{issuer},
				ExpiresAt:  token.NumericDate(f.session.Expiry.Unix()),
				IssuedAt:   token.NumericDate(t0.Unix()),
				AuthTime:   token.NumericDate(f.session.AuthTime.Unix()),
				ID:         mintedRT.ID,
				ClientID:   f.session.ClientID,
				SessionID:  f.session.ID,
				Generation: 7,
				Scope:      f.session.Scope,
				Binding:    &token.Binding{ServiceAccountUID: "0b4e9c1a-sa", PodUID: "5f1d2e3c-pod"},
			}
			if !reflect.DeepEqual(mintedRT, wantRT) {
				t.Errorf("MintRefresh claims: got %+v; want %+v", mintedRT, wantRT)
			}
			if len(mintedRT.ID) != 22 || mintedRT.ID == minted.ID {
				t.Errorf("refresh jti %q: got %d characters, access jti %q; want 22 and different", mintedRT.ID, len(mintedRT.ID), minted.ID)
			}
			verifiedRT, err := f.codec.VerifyRefresh(raw)
			if err != nil {
				t.Fatalf("VerifyRefresh: %v", err)
			}
			if !reflect.DeepEqual(verifiedRT, mintedRT) {
				t.Errorf("VerifyRefresh: got %+v; want what was minted, %+v", verifiedRT, mintedRT)
			}
			checkHeader(t, raw, string(alg), f.active.ID, token.RefreshType)
			if got := verifiedRT.Session(); !sameSession(got, f.session) {
				t.Errorf("Session(): got %+v; want %+v", got, f.session)
			}
		})
	}
}

func checkHeader(t *testing.T, raw, alg, kid, typ string) {
	t.Helper()
	h, _ := decode(t, raw)
	want := map[string]any{"alg": alg, "kid": kid, "typ": typ}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("header: got %v; want %v", h, want)
	}
}

func payloadJSON(t *testing.T, raw string) string {
	t.Helper()
	js, err := b64.DecodeString(strings.Split(raw, ".")[1])
	if err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	return string(js)
}

func sameSession(a, b token.Session) bool {
	return a.ID == b.ID && a.Subject == b.Subject && a.ClientID == b.ClientID && a.Scope == b.Scope &&
		a.AuthTime.Equal(b.AuthTime) && a.Expiry.Equal(b.Expiry)
}

// A resource server that knows nothing of this package verifies access tokens with stock golang-jwt and
// the public key (or the shared secret, for HS256).
func TestAccessTokensVerifyWithStockGolangJWT(t *testing.T) {
	for _, alg := range algorithms {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, alg)
			var claims jwt.RegisteredClaims
			tok, err := jwt.ParseWithClaims(f.access(t), &claims, func(*jwt.Token) (any, error) {
				return f.active.VerificationKey(), nil
			}, jwt.WithValidMethods([]string{string(alg)}), jwt.WithAudience(audience), jwt.WithIssuer(issuer),
				jwt.WithTimeFunc(f.clock.Now), jwt.WithExpirationRequired())
			if err != nil {
				t.Fatalf("jwt.ParseWithClaims: %v", err)
			}
			if got := tok.Header["typ"]; got != token.AccessType {
				t.Errorf("typ: got %v; want %q", got, token.AccessType)
			}
			if claims.Subject != f.session.Subject {
				t.Errorf("sub: got %q; want %q", claims.Subject, f.session.Subject)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	type testCase struct {
		name string
		// refresh says which Verify the token goes to.
		refresh bool
		// only, when set, lists the algorithms the case applies to.
		only []v1alpha1.SigningAlgorithm
		// token makes the token.
		token func(t *testing.T, f *fixture) string
		// want is the error the refusal wraps; nil means the token is accepted.
		want []error
	}
	is := func(errs ...error) []error { return errs }
	editAccess := func(edit func(h, c map[string]any)) func(*testing.T, *fixture) string {
		return func(t *testing.T, f *fixture) string { return f.forge(t, f.access(t), edit) }
	}
	editRefresh := func(edit func(h, c map[string]any)) func(*testing.T, *fixture) string {
		return func(t *testing.T, f *fixture) string { return f.forge(t, f.refresh(t), edit) }
	}
	cases := []testCase{
		{
			name:  "an access token re-signed by hand without changes is accepted",
			token: editAccess(func(h, c map[string]any) {}),
		},
		{
			name:    "a refresh token re-signed by hand without changes is accepted",
			refresh: true,
			token:   editRefresh(func(h, c map[string]any) {}),
		},
		{
			name:  "an empty string is malformed",
			token: func(*testing.T, *fixture) string { return "" },
			want:  is(token.ErrMalformed),
		},
		{
			name:    "an empty string is a malformed refresh token too",
			refresh: true,
			token:   func(*testing.T, *fixture) string { return "" },
			want:    is(token.ErrMalformed),
		},
		{
			name:  "a genuinely signed token longer than MaxTokenSize is malformed",
			token: editAccess(func(h, c map[string]any) { c["scope"] = strings.Repeat("s", token.MaxTokenSize) }),
			want:  is(token.ErrMalformed),
		},
		{
			name:    "a genuinely signed refresh token longer than MaxTokenSize is malformed",
			refresh: true,
			token:   editRefresh(func(h, c map[string]any) { c["scope"] = strings.Repeat("s", token.MaxTokenSize) }),
			want:    is(token.ErrMalformed),
		},
		{
			name:  "a token one byte short is refused",
			token: func(t *testing.T, f *fixture) string { raw := f.access(t); return raw[:len(raw)-1] },
			// Whether the shortened signature still decodes depends on its length.
			want: is(token.ErrMalformed, token.ErrSignature),
		},
		{
			name:  "a token without its signature is refused",
			token: func(t *testing.T, f *fixture) string { raw := f.access(t); return raw[:strings.LastIndex(raw, ".")+1] },
			want:  is(token.ErrSignature),
		},
		{
			name:  "a token cut after its payload is malformed",
			token: func(t *testing.T, f *fixture) string { raw := f.access(t); return raw[:strings.LastIndex(raw, ".")] },
			want:  is(token.ErrMalformed),
		},
		{
			name:  "a token cut inside its payload is malformed",
			token: func(t *testing.T, f *fixture) string { raw := f.access(t); return raw[:strings.Index(raw, ".")+10] },
			want:  is(token.ErrMalformed),
		},
		{
			name:  "a token with a fourth segment is malformed",
			token: func(t *testing.T, f *fixture) string { return f.access(t) + ".e30" },
			want:  is(token.ErrMalformed),
		},
		{
			name: "a header that is not JSON is malformed",
			token: func(t *testing.T, f *fixture) string {
				raw := f.access(t)
				return b64.EncodeToString([]byte("not json")) + raw[strings.Index(raw, "."):]
			},
			want: is(token.ErrMalformed),
		},
		{
			name: "a payload that is not JSON is malformed",
			token: func(t *testing.T, f *fixture) string {
				parts := strings.Split(f.access(t), ".")
				return parts[0] + "." + b64.EncodeToString([]byte(`{"iss":`)) + "." + parts[2]
			},
			want: is(token.ErrMalformed),
		},
		{
			name: "a payload that is a JSON array is malformed",
			token: func(t *testing.T, f *fixture) string {
				parts := strings.Split(f.access(t), ".")
				return parts[0] + "." + b64.EncodeToString([]byte(`["iss"]`)) + "." + parts[2]
			},
			want: is(token.ErrMalformed),
		},
		{
			name: "a newline inside the signature is malformed, though base64 decoding would skip it",
			token: func(t *testing.T, f *fixture) string {
				raw := f.access(t)
				return raw[:len(raw)-4] + "\n" + raw[len(raw)-4:]
			},
			want: is(token.ErrMalformed),
		},
		{
			name:  "a signature whose last character has non-zero padding bits is malformed",
			token: func(t *testing.T, f *fixture) string { return withPaddingBit(f.access(t)) },
			want:  is(token.ErrMalformed),
		},
		{
			name: "alg none without a signature is refused",
			token: func(t *testing.T, f *fixture) string {
				h, c := decode(t, f.access(t))
				h["alg"] = "none"
				return segment(t, h) + "." + segment(t, c) + "."
			},
			want: is(token.ErrSignature),
		},
		{
			name: "alg none with a genuine signature attached is refused",
			token: func(t *testing.T, f *fixture) string {
				raw := f.access(t)
				h, _ := decode(t, raw)
				h["alg"] = "none"
				return segment(t, h) + raw[strings.Index(raw, "."):]
			},
			want: is(token.ErrSignature),
		},
		{
			name:  "a token without alg is refused",
			token: editAccess(func(h, c map[string]any) { delete(h, "alg") }),
			want:  is(token.ErrSignature),
		},
		{
			name: "the policy's own key under another algorithm of its family is refused",
			// No other algorithm signs with an Ed25519 or a P-256 key.
			only: []v1alpha1.SigningAlgorithm{v1alpha1.HS256, v1alpha1.RS256},
			token: func(t *testing.T, f *fixture) string {
				other := map[v1alpha1.SigningAlgorithm]jwt.SigningMethod{
					v1alpha1.HS256: jwt.SigningMethodHS512,
					v1alpha1.RS256: jwt.SigningMethodPS256,
				}[f.alg]
				h, c := decode(t, f.access(t))
				h["alg"] = other.Alg()
				return sign(t, h, c, other, f.active.SigningKey())
			},
			want: is(token.ErrSignature),
		},
		{
			name:  "a token without kid is refused",
			token: editAccess(func(h, c map[string]any) { delete(h, "kid") }),
			want:  is(token.ErrUnknownKey),
		},
		{
			name:  "a kid the policy does not have is refused",
			token: editAccess(func(h, c map[string]any) { h["kid"] = "c29tZW9uZS1lbHNlcy1rZXk" }),
			want:  is(token.ErrUnknownKey),
		},
		{
			name:  "a kid that is a path is refused",
			token: editAccess(func(h, c map[string]any) { h["kid"] = "../../etc/passwd" }),
			want:  is(token.ErrUnknownKey),
		},
		{
			name: "a kid that is a number is refused",
			token: editAccess(func(h, c map[string]any) {
				h["kid"] = 1
			}),
			want: is(token.ErrUnknownKey),
		},
		{
			name: "a token signed by another policy's key under the same kid is refused",
			token: func(t *testing.T, f *fixture) string {
				h, c := decode(t, f.access(t))
				return sign(t, h, c, jwt.GetSigningMethod(string(f.alg)), f.impostor.SigningKey())
			},
			want: is(token.ErrSignature),
		},
		{
			name: "a token whose payload was changed after signing is refused",
			token: func(t *testing.T, f *fixture) string {
				parts := strings.Split(f.access(t), ".")
				_, c := decode(t, f.access(t))
				c["sub"] = "system:serviceaccount:kube-system:admin"
				return parts[0] + "." + segment(t, c) + "." + parts[2]
			},
			want: is(token.ErrSignature),
		},
		{
			name:    "an access token presented as a refresh token is refused",
			refresh: true,
			token:   func(t *testing.T, f *fixture) string { return f.access(t) },
			want:    is(token.ErrWrongType),
		},
		{
			name:  "a refresh token presented as an access token is refused",
			token: func(t *testing.T, f *fixture) string { return f.refresh(t) },
			want:  is(token.ErrWrongType),
		},
		{
			name:  "an access token with typ JWT is refused",
			token: editAccess(func(h, c map[string]any) { h["typ"] = "JWT" }),
			want:  is(token.ErrWrongType),
		},
		{
			name:  "an access token without typ is refused",
			token: editAccess(func(h, c map[string]any) { delete(h, "typ") }),
			want:  is(token.ErrWrongType),
		},
		{
			name:    "a refresh token without typ is refused",
			refresh: true,
			token:   editRefresh(func(h, c map[string]any) { delete(h, "typ") }),
			want:    is(token.ErrWrongType),
		},
		{
			name:  "an access token of another issuer is refused",
			token: editAccess(func(h, c map[string]any) { c["iss"] = "https://evil.example.com" }),
			want:  is(token.ErrWrongIssuer),
		},
		{
			name:    "a refresh token of another issuer is refused",
			refresh: true,
			token:   editRefresh(func(h, c map[string]any) { c["iss"] = "https://evil.example.com" }),
			want:    is(token.ErrWrongIssuer),
		},
		{
			name:  "an access token without iss is malformed",
			token: editAccess(func(h, c map[string]any) { delete(c, "iss") }),
			want:  is(token.ErrMalformed),
		},
		{
			name:  "an access token for another resource server is refused",
			token: editAccess(func(h, c map[string]any) { c["aud"] = []string{"https://other.example.com"} }),
			want:  is(token.ErrWrongAudience),
		},
		{
			name:  "an access token addressed to the issuer is refused",
			token: editAccess(func(h, c map[string]any) { c["aud"] = []string{issuer} }),
			want:  is(token.ErrWrongAudience),
		},
		{
			name:    "a refresh token addressed to the resource server is refused",
			refresh: true,
			token:   editRefresh(func(h, c map[string]any) { c["aud"] = []string{audience} }),
			want:    is(token.ErrWrongAudience),
		},
		{
			name:  "an access token without aud is malformed",
			token: editAccess(func(h, c map[string]any) { delete(c, "aud") }),
			want:  is(token.ErrMalformed),
		},
		{
			name:  "an aud that is a string rather than the array this package mints is malformed",
			token: editAccess(func(h, c map[string]any) { c["aud"] = audience }),
			want:  is(token.ErrMalformed),
		},
		{
			name:  "an access token without exp is malformed",
			token: editAccess(func(h, c map[string]any) { delete(c, "exp") }),
			want:  is(token.ErrMalformed),
		},
		{
			name:  "an exp with a fraction is malformed",
			token: editAccess(func(h, c map[string]any) { c["exp"] = json.Number("1772366400.5") }),
			want:  is(token.ErrMalformed),
		},
		{
			name:  "an exp that is a string is malformed",
			token: editAccess(func(h, c map[string]any) { c["exp"] = "1772366400" }),
			want:  is(token.ErrMalformed),
		},
		{
			name:  "an access token without iat is malformed",
			token: editAccess(func(h, c map[string]any) { delete(c, "iat") }),
			want:  is(token.ErrMalformed),
		},
		{
			name:  "an access token without sid is malformed",
			token: editAccess(func(h, c map[string]any) { delete(c, "sid") }),
			want:  is(token.ErrMalformed),
		},
		{
			name:  "an access token without sub is malformed",
			token: editAccess(func(h, c map[string]any) { delete(c, "sub") }),
			want:  is(token.ErrMalformed),
		},
		{
			name:  "an access token without jti is malformed",
			token: editAccess(func(h, c map[string]any) { delete(c, "jti") }),
			want:  is(token.ErrMalformed),
		},
		{
			name:  "an access token without auth_time is malformed",
			token: editAccess(func(h, c map[string]any) { delete(c, "auth_time") }),
			want:  is(token.ErrMalformed),
		},
		{
			name:    "a refresh token without auth_time is malformed",
			refresh: true,
			token:   editRefresh(func(h, c map[string]any) { delete(c, "auth_time") }),
			want:    is(token.ErrMalformed),
		},
		{
			name:    "a refresh token whose gen is negative is malformed",
			refresh: true,
			token:   editRefresh(func(h, c map[string]any) { c["gen"] = -1 }),
			want:    is(token.ErrMalformed),
		},
		{
			name:  "of several faults the issuer is named first",
			token: editAccess(func(h, c map[string]any) { c["iss"] = "https://evil.example.com"; c["exp"] = 1 }),
			want:  is(token.ErrWrongIssuer),
		},
	}
	for _, alg := range algorithms {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, alg)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					if tc.only != nil && !slices.Contains(tc.only, alg) {
						t.Skipf("does not apply to %s", alg)
					}
					raw := tc.token(t, f)
					var err error
					if tc.refresh {
						_, err = f.codec.VerifyRefresh(raw)
					} else {
						_, err = f.codec.VerifyAccess(raw)
					}
					if len(tc.want) == 0 {
						if err != nil {
							t.Fatalf("got %v; want the token accepted", err)
						}
						return
					}
					if err == nil {
						t.Fatalf("got the token accepted; want an error wrapping one of %v", tc.want)
					}
					for _, w := range tc.want {
						if errors.Is(err, w) {
							checkRefusal(t, raw, err, w)
							return
						}
					}
					t.Errorf("got %v; want an error wrapping one of %v", err, tc.want)
				})
			}
		})
	}
}

// An HS256 token whose secret is the public key, in any of its encodings, must not verify under an
// asymmetric policy: that is the classic algorithm confusion attack.
func TestVerifyRefusesHS256SignedWithThePublicKey(t *testing.T) {
	for _, alg := range algorithms {
		if alg.Symmetric() {
			continue
		}
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, alg)
			forms := publicKeyForms(t, f.active.Public)
			for name, secret := range forms {
				t.Run(name, func(t *testing.T) {
					for _, kind := range []string{"access", "refresh"} {
						genuine, verify := f.access(t), func(raw string) error { _, err := f.codec.VerifyAccess(raw); return err }
						if kind == "refresh" {
							genuine, verify = f.refresh(t), func(raw string) error { _, err := f.codec.VerifyRefresh(raw); return err }
						}
						h, c := decode(t, genuine)
						h["alg"] = "HS256"
						raw := sign(t, h, c, jwt.SigningMethodHS256, secret)
						err := verify(raw)
						if err == nil {
							t.Fatalf("%s token: got it accepted; want it refused", kind)
						}
						checkRefusal(t, raw, err, token.ErrSignature)
					}
				})
			}
		})
	}
}

func publicKeyForms(t *testing.T, pub any) map[string][]byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatalf("x509.MarshalPKIXPublicKey: %v", err)
	}
	forms := map[string][]byte{
		"PKIX DER": der,
		"PEM":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		forms["raw"] = []byte(k)
	case *ecdsa.PublicKey:
		point, err := k.Bytes()
		if err != nil {
			t.Fatalf("ecdsa.PublicKey.Bytes: %v", err)
		}
		forms["uncompressed point"] = point
	case *rsa.PublicKey:
		forms["PKCS#1 DER"] = x509.MarshalPKCS1PublicKey(k)
		forms["PKCS#1 PEM"] = pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(k)})
	}
	return forms
}

// A token of a policy that shares the keys but not the issuer or audiences is refused: each claim is
// checked, not just the signature.
func TestVerifyRefusesTokensOfAnotherPolicyWithTheSameKeys(t *testing.T) {
	for _, alg := range algorithms {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, alg)
			otherIssuer := f.newCodec(t, func(p *token.Policy) { p.Issuer = "https://tokenwarden.example.com/policies/apps/other" })
			otherAudience := f.newCodec(t, func(p *token.Policy) { p.Audiences = []string{"https://other.example.com"} })

			raw, _, err := otherIssuer.MintAccess(f.session, 1, t0)
			if err != nil {
				t.Fatalf("MintAccess: %v", err)
			}
			_, err = f.codec.VerifyAccess(raw)
			checkRefusal(t, raw, err, token.ErrWrongIssuer)

			raw, _, err = otherIssuer.MintRefresh(f.session, 1, t0)
			if err != nil {
				t.Fatalf("MintRefresh: %v", err)
			}
			_, err = f.codec.VerifyRefresh(raw)
			// The refresh audience is the issuer, so both are wrong; the issuer is named.
			checkRefusal(t, raw, err, token.ErrWrongIssuer)

			raw, _, err = otherAudience.MintAccess(f.session, 1, t0)
			if err != nil {
				t.Fatalf("MintAccess: %v", err)
			}
			_, err = f.codec.VerifyAccess(raw)
			checkRefusal(t, raw, err, token.ErrWrongAudience)

			// Refresh tokens do not carry the resource audiences, so they still verify across such policies.
			raw, _, err = otherAudience.MintRefresh(f.session, 1, t0)
			if err != nil {
				t.Fatalf("MintRefresh: %v", err)
			}
			if _, err := f.codec.VerifyRefresh(raw); err != nil {
				t.Errorf("VerifyRefresh of a policy with the same issuer: got %v; want it accepted", err)
			}
		})
	}
}

func TestVerifyChecksTimeWithLeeway(t *testing.T) {
	const leeway = token.DefaultLeeway
	accessExp := t0.Add(lifetime)
	cases := []struct {
		name     string
		refresh  bool
		issuedAt time.Time
		now      time.Time
		want     error
	}{
		{name: "an access token is accepted the second before it expires", issuedAt: t0, now: accessExp.Add(-time.Second)},
		{name: "an access token is accepted up to the leeway after it expired", issuedAt: t0, now: accessExp.Add(leeway - time.Second)},
		{name: "an access token is refused once the leeway after expiry has passed", issuedAt: t0, now: accessExp.Add(leeway), want: token.ErrExpired},
		{name: "an access token is refused long after it expired", issuedAt: t0, now: accessExp.Add(time.Hour), want: token.ErrExpired},
		{name: "an access token issued up to the leeway in the future is accepted", issuedAt: t0.Add(leeway), now: t0},
		{name: "an access token issued beyond the leeway in the future is refused", issuedAt: t0.Add(leeway + time.Second), now: t0, want: token.ErrNotYetValid},
		{name: "a refresh token is accepted up to the leeway after the session ended", refresh: true, issuedAt: t0, now: t0.Add(7*24*time.Hour + leeway - time.Second)},
		{name: "a refresh token is refused once the leeway after the session's end has passed", refresh: true, issuedAt: t0, now: t0.Add(7*24*time.Hour + leeway), want: token.ErrExpired},
		{name: "a refresh token issued beyond the leeway in the future is refused", refresh: true, issuedAt: t0.Add(leeway + time.Second), now: t0, want: token.ErrNotYetValid},
	}
	for _, alg := range algorithms {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, alg)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					var raw string
					var err error
					if tc.refresh {
						raw, _, err = f.codec.MintRefresh(f.session, 1, tc.issuedAt)
					} else {
						raw, _, err = f.codec.MintAccess(f.session, 1, tc.issuedAt)
					}
					if err != nil {
						t.Fatalf("mint: %v", err)
					}
					f.clock.SetTime(tc.now)
					if tc.refresh {
						_, err = f.codec.VerifyRefresh(raw)
					} else {
						_, err = f.codec.VerifyAccess(raw)
					}
					if tc.want == nil {
						if err != nil {
							t.Fatalf("got %v; want the token accepted", err)
						}
						return
					}
					checkRefusal(t, raw, err, tc.want)
				})
			}
		})
	}
}

func TestVerifyUsesThePolicyLeeway(t *testing.T) {
	f := newFixture(t, v1alpha1.EdDSA)
	c := f.newCodec(t, func(p *token.Policy) { p.Leeway = time.Minute })
	raw, _, err := c.MintAccess(f.session, 1, t0)
	if err != nil {
		t.Fatalf("MintAccess: %v", err)
	}
	f.clock.SetTime(t0.Add(lifetime + time.Minute - time.Second))
	if _, err := c.VerifyAccess(raw); err != nil {
		t.Errorf("59s after expiry with a 1m leeway: got %v; want the token accepted", err)
	}
	f.clock.SetTime(t0.Add(lifetime + time.Minute))
	_, err = c.VerifyAccess(raw)
	checkRefusal(t, raw, err, token.ErrExpired)
}

func TestMintingAgainGivesTheSameToken(t *testing.T) {
	for _, alg := range algorithms {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, alg)
			// ECDSA signatures are randomized; EdDSA, RSA PKCS #1 v1.5 and HMAC are deterministic.
			deterministic := alg != v1alpha1.ES256

			a1, ac1, err := f.codec.MintAccess(f.session, 3, t0)
			if err != nil {
				t.Fatalf("MintAccess: %v", err)
			}
			a2, ac2, err := f.codec.MintAccess(f.session, 3, t0)
			if err != nil {
				t.Fatalf("MintAccess: %v", err)
			}
			if !reflect.DeepEqual(ac1, ac2) {
				t.Errorf("access claims minted twice: got %+v and %+v; want them equal", ac1, ac2)
			}
			if deterministic && a1 != a2 {
				t.Errorf("access token minted twice: got two different tokens; want byte-identical ones")
			}

			r1, rc1, err := f.codec.MintRefresh(f.session, 3, t0)
			if err != nil {
				t.Fatalf("MintRefresh: %v", err)
			}
			r2, rc2, err := f.codec.MintRefresh(f.session, 3, t0)
			if err != nil {
				t.Fatalf("MintRefresh: %v", err)
			}
			if !reflect.DeepEqual(rc1, rc2) {
				t.Errorf("refresh claims minted twice: got %+v and %+v; want them equal", rc1, rc2)
			}
			if deterministic && r1 != r2 {
				t.Errorf("refresh token minted twice: got two different tokens; want byte-identical ones")
			}

			_, next, err := f.codec.MintRefresh(f.session, 4, t0)
			if err != nil {
				t.Fatalf("MintRefresh: %v", err)
			}
			if next.ID == rc1.ID {
				t.Errorf("jti of generations 3 and 4: got %q for both; want them different", next.ID)
			}
			other := f.session
			other.ID = "b3RoZXItc2Vzc2lvbi1pZA"
			_, otherClaims, err := f.codec.MintRefresh(other, 3, t0)
			if err != nil {
				t.Fatalf("MintRefresh: %v", err)
			}
			if otherClaims.ID == rc1.ID {
				t.Errorf("jti of two sessions at generation 3: got %q for both; want them different", rc1.ID)
			}
		})
	}
}

// Keys rotate: a key that no longer signs still verifies what it signed, and minting uses the active key.
func TestRotatedKeysStillVerify(t *testing.T) {
	for _, alg := range algorithms {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, alg)
			before := f.newCodec(t, func(p *token.Policy) { p.Keys = f.set(t, f.retired, f.active, f.retired) })
			onlyActive := f.newCodec(t, func(p *token.Policy) { p.Keys = f.set(t, f.active, f.active) })

			old, _, err := before.MintAccess(f.session, 1, t0)
			if err != nil {
				t.Fatalf("MintAccess: %v", err)
			}
			checkHeader(t, old, string(alg), f.retired.ID, token.AccessType)
			oldRT, _, err := before.MintRefresh(f.session, 1, t0)
			if err != nil {
				t.Fatalf("MintRefresh: %v", err)
			}
			if _, err := f.codec.VerifyAccess(old); err != nil {
				t.Errorf("VerifyAccess of a token of the retired key: got %v; want it accepted", err)
			}
			if _, err := f.codec.VerifyRefresh(oldRT); err != nil {
				t.Errorf("VerifyRefresh of a token of the retired key: got %v; want it accepted", err)
			}
			checkHeader(t, f.access(t), string(alg), f.active.ID, token.AccessType)
			checkHeader(t, f.refresh(t), string(alg), f.active.ID, token.RefreshType)

			_, err = onlyActive.VerifyAccess(old)
			checkRefusal(t, old, err, token.ErrUnknownKey)
			_, err = onlyActive.VerifyRefresh(oldRT)
			checkRefusal(t, oldRT, err, token.ErrUnknownKey)
		})
	}
}

func TestMintAccessEndsWithTheSession(t *testing.T) {
	f := newFixture(t, v1alpha1.EdDSA)
	s := f.session
	s.Expiry = t0.Add(time.Minute)
	_, claims, err := f.codec.MintAccess(s, 1, t0)
	if err != nil {
		t.Fatalf("MintAccess: %v", err)
	}
	if got, want := claims.ExpiresAt.Time(), s.Expiry; !got.Equal(want) {
		t.Errorf("exp of an access token minted a minute before the session ends: got %s; want %s", got, want)
	}
	s.Expiry = time.Time{}
	_, claims, err = f.codec.MintAccess(s, 1, t0)
	if err != nil {
		t.Fatalf("MintAccess: %v", err)
	}
	if got, want := claims.ExpiresAt.Time(), t0.Add(lifetime); !got.Equal(want) {
		t.Errorf("exp of an access token of a session without expiry: got %s; want %s", got, want)
	}
}

func TestMintRefuses(t *testing.T) {
	f := newFixture(t, v1alpha1.EdDSA)
	edit := func(e func(*token.Session)) token.Session { s := f.session; e(&s); return s }
	cases := []struct {
		name     string
		refresh  bool
		session  token.Session
		issuedAt time.Time
		want     error // nil: any error
	}{
		{name: "an access token without a session id", session: edit(func(s *token.Session) { s.ID = "" }), issuedAt: t0},
		{name: "an access token without a subject", session: edit(func(s *token.Session) { s.Subject = "" }), issuedAt: t0},
		{name: "an access token without an issue time", session: f.session},
		{name: "an access token without an authentication time", session: edit(func(s *token.Session) { s.AuthTime = time.Time{} }), issuedAt: t0},
		{name: "an access token after the session ended", session: f.session, issuedAt: f.session.Expiry, want: token.ErrExpired},
		{name: "an access token longer than MaxTokenSize", session: edit(func(s *token.Session) { s.Scope = strings.Repeat("s", token.MaxTokenSize) }), issuedAt: t0},
		{name: "a refresh token without a session expiry", refresh: true, session: edit(func(s *token.Session) { s.Expiry = time.Time{} }), issuedAt: t0},
		{name: "a refresh token without an authentication time", refresh: true, session: edit(func(s *token.Session) { s.AuthTime = time.Time{} }), issuedAt: t0},
		{name: "a refresh token after the session ended", refresh: true, session: f.session, issuedAt: f.session.Expiry.Add(time.Second), want: token.ErrExpired},
		{name: "a refresh token longer than MaxTokenSize", refresh: true, session: edit(func(s *token.Session) { s.Subject = strings.Repeat("s", token.MaxTokenSize) }), issuedAt: t0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var raw string
			var err error
			if tc.refresh {
				raw, _, err = f.codec.MintRefresh(tc.session, 1, tc.issuedAt)
			} else {
				raw, _, err = f.codec.MintAccess(tc.session, 1, tc.issuedAt)
			}
			if err == nil {
				t.Fatalf("got a token; want an error")
			}
			if raw != "" {
				t.Errorf("got token %d bytes long with the error; want none", len(raw))
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v; want an error wrapping %v", err, tc.want)
			}
		})
	}
}

func TestNewRefusesInvalidPolicies(t *testing.T) {
	f := newFixture(t, v1alpha1.EdDSA)
	es, err := testKeys[v1alpha1.ES256]()
	if err != nil {
		t.Fatalf("generate ES256 keys: %v", err)
	}
	mismatched := *f.active
	mismatched.Public = f.retired.Public
	unusable := keys.Key{ID: "no-material", Algorithm: v1alpha1.EdDSA}
	cases := map[string]func(*token.Policy){
		"an empty issuer":                              func(p *token.Policy) { p.Issuer = "" },
		"a relative issuer":                            func(p *token.Policy) { p.Issuer = "tokenwarden" },
		"an issuer that is not http(s)":                func(p *token.Policy) { p.Issuer = "ftp://tokenwarden.example.com" },
		"an issuer with a query":                       func(p *token.Policy) { p.Issuer = issuer + "?a=b" },
		"an issuer with a fragment":                    func(p *token.Policy) { p.Issuer = issuer + "#a" },
		"no audience":                                  func(p *token.Policy) { p.Audiences = nil },
		"an empty audience":                            func(p *token.Policy) { p.Audiences = []string{audience, ""} },
		"the issuer as an audience":                    func(p *token.Policy) { p.Audiences = []string{audience, issuer} },
		"no access lifetime":                           func(p *token.Policy) { p.AccessLifetime = 0 },
		"an access lifetime under a second":            func(p *token.Policy) { p.AccessLifetime = 500 * time.Millisecond },
		"a negative leeway":                            func(p *token.Policy) { p.Leeway = -time.Second },
		"no keys":                                      func(p *token.Policy) { p.Keys = nil },
		"an active key of another algorithm":           func(p *token.Policy) { p.Keys.Active = es[0] },
		"an active key whose public half is another's": func(p *token.Policy) { p.Keys = f.set(t, &mismatched, &mismatched) },
		"an active key without key material":           func(p *token.Policy) { p.Keys = f.set(t, &unusable, &unusable) },
		"an HS256 key with an empty secret": func(p *token.Policy) {
			hs, err := testKeys[v1alpha1.HS256]()
			if err != nil {
				t.Fatalf("generate HS256 keys: %v", err)
			}
			empty := keys.Key{ID: "empty", Algorithm: v1alpha1.HS256}
			s, err := keys.NewSet(v1alpha1.HS256, hs[0].ID, []*keys.Key{hs[0], &empty})
			if err != nil {
				t.Fatalf("keys.NewSet: %v", err)
			}
			p.Keys = s
		},
		"an unsupported algorithm": func(p *token.Policy) {
			p.Keys = f.set(t, f.active, f.active)
			p.Keys.Algorithm = "PS256"
		},
	}
	if _, err := token.New(f.policy(t), f.clock); err != nil {
		t.Fatalf("token.New of the valid policy: got %v; want a codec", err)
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			p := f.policy(t)
			edit(&p)
			if c, err := token.New(p, f.clock); err == nil {
				t.Errorf("got codec %p; want an error", c)
			}
		})
	}
	t.Run("no clock", func(t *testing.T) {
		if c, err := token.New(f.policy(t), nil); err == nil {
			t.Errorf("got codec %p; want an error", c)
		}
	})
}

// The codec does not keep the caller's audience slice, and callers cannot change it through claims.
func TestCodecDoesNotShareAudiences(t *testing.T) {
	f := newFixture(t, v1alpha1.HS256)
	p := f.policy(t)
	c, err := token.New(p, f.clock)
	if err != nil {
		t.Fatalf("token.New: %v", err)
	}
	p.Audiences[0] = "https://changed.example.com"
	_, claims, err := c.MintAccess(f.session, 1, t0)
	if err != nil {
		t.Fatalf("MintAccess: %v", err)
	}
	claims.Audience[0] = "https://changed-too.example.com"
	_, claims, err = c.MintAccess(f.session, 1, t0)
	if err != nil {
		t.Fatalf("MintAccess: %v", err)
	}
	if want := []string{audience}; !slices.Equal(claims.Audience, want) {
		t.Errorf("aud after the caller changed its slices: got %q; want %q", claims.Audience, want)
	}
}

func TestCodecIsSafeForConcurrentUse(t *testing.T) {
	for _, alg := range []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.HS256} {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, alg)
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 25 {
						s := f.session
						s.ID = fmt.Sprintf("session-%d-%d", g, i)
						at, _, err := f.codec.MintAccess(s, uint64(i), t0)
						if err != nil {
							t.Errorf("MintAccess: %v", err)
							return
						}
						rt, _, err := f.codec.MintRefresh(s, uint64(i), t0)
						if err != nil {
							t.Errorf("MintRefresh: %v", err)
							return
						}
						if c, err := f.codec.VerifyAccess(at); err != nil || c.SessionID != s.ID {
							t.Errorf("VerifyAccess: got %v, %v; want the claims of session %s", c, err, s.ID)
						}
						if c, err := f.codec.VerifyRefresh(rt); err != nil || c.Generation != uint64(i) {
							t.Errorf("VerifyRefresh: got %v, %v; want generation %d", c, err, i)
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

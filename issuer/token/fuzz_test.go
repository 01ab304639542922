package token_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"reflect"
	"strings"
	"testing"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// fuzzCodec is a codec with fixed keys and a stopped clock, and the only two tokens it may accept.
type fuzzCodec struct {
	name            string
	codec           *token.Codec
	access, refresh string
	accessClaims    *token.AccessClaims
	refreshClaims   *token.RefreshClaims
}

// fuzzCodecs builds an EdDSA and an HS256 codec whose keys share one kid, and whose HS256 secret is the
// Ed25519 public key: every HS256 token is an algorithm confusion attempt on the EdDSA codec. The keys are
// fixed so that a failing input found by the fuzzer reproduces.
func fuzzCodecs(tb testing.TB) []*fuzzCodec {
	tb.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	ed := &keys.Key{ID: "k1", Algorithm: v1alpha1.EdDSA, Signer: priv, Public: pub}
	hs := &keys.Key{ID: "k1", Algorithm: v1alpha1.HS256, Secret: []byte(pub)}

	session := token.Session{
		ID:       "ZnV6ei1zZXNzaW9uLWlkLTE",
		Subject:  "fuzz",
		ClientID: "fuzz-client",
		AuthTime: t0,
		Expiry:   t0.Add(lifetime * 4),
		Scope:    "a b",
	}
	var out []*fuzzCodec
	for _, k := range []*keys.Key{ed, hs} {
		set, err := keys.NewSet(k.Algorithm, k.ID, []*keys.Key{k})
		if err != nil {
			tb.Fatalf("keys.NewSet: %v", err)
		}
		c, err := token.New(token.Policy{Issuer: issuer, Audiences: []string{audience}, AccessLifetime: lifetime, Keys: set},
			clocktesting.NewFakeClock(t0))
		if err != nil {
			tb.Fatalf("token.New: %v", err)
		}
		fc := &fuzzCodec{name: string(k.Algorithm), codec: c}
		if fc.access, fc.accessClaims, err = c.MintAccess(session, 1, t0); err != nil {
			tb.Fatalf("MintAccess: %v", err)
		}
		if fc.refresh, fc.refreshClaims, err = c.MintRefresh(session, 1, t0); err != nil {
			tb.Fatalf("MintRefresh: %v", err)
		}
		out = append(out, fc)
	}
	return out
}

// FuzzVerify feeds arbitrary strings to both Verify methods of both codecs: none may panic, accept a
// token the codec did not mint, or refuse without exactly one sentinel, or quote the token in its error.
func FuzzVerify(f *testing.F) {
	codecs := fuzzCodecs(f)
	for _, c := range codecs {
		for _, raw := range []string{c.access, c.refresh} {
			parts := strings.Split(raw, ".")
			f.Add(raw)
			f.Add(raw[:len(raw)-1])
			f.Add(raw + ".")
			f.Add(parts[0] + "." + parts[1] + ".")
			f.Add(parts[0] + ".." + parts[2])
			f.Add("eyJhbGciOiJub25lIiwia2lkIjoiazEiLCJ0eXAiOiJhdCtqd3QifQ." + parts[1] + ".") // alg none, kid k1
			f.Add(parts[1] + "." + parts[0] + "." + parts[2])
			f.Add(strings.ReplaceAll(raw, "_", "/"))
			f.Add(raw[:len(raw)-3] + "\r\n" + raw[len(raw)-3:]) // skipped by base64 decoding
			f.Add(withPaddingBit(raw))
		}
	}
	f.Add("")
	f.Add("..")
	f.Add("a.b.c")
	f.Add("e30.e30.")
	f.Add("bnVsbA.bnVsbA.bnVsbA") // null.null.null
	f.Add(strings.Repeat("A", token.MaxTokenSize+1))

	f.Fuzz(func(t *testing.T, raw string) {
		for _, c := range codecs {
			ac, err := c.codec.VerifyAccess(raw)
			if err == nil && (raw != c.access || !reflect.DeepEqual(ac, c.accessClaims)) {
				t.Fatalf("%s VerifyAccess accepted a token it did not mint", c.name)
			}
			checkFuzzRefusal(t, raw, err)

			rc, err := c.codec.VerifyRefresh(raw)
			if err == nil && (raw != c.refresh || !reflect.DeepEqual(rc, c.refreshClaims)) {
				t.Fatalf("%s VerifyRefresh accepted a token it did not mint", c.name)
			}
			checkFuzzRefusal(t, raw, err)
		}
	})
}

func checkFuzzRefusal(t *testing.T, raw string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("got error %q wrapping %d sentinels; want exactly one", err, n)
	}
	// A decoded claim is shorter than the segment it came from, so a message that holds a whole
	// three-segment token quotes it.
	if strings.Count(raw, ".") == 2 && len(raw) >= 32 && strings.Contains(err.Error(), raw) {
		t.Fatalf("got an error that quotes the token; want none of it")
	}
}

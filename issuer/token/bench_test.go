package token_test

import (
	"strings"
	"testing"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// benchmark runs op once per iteration for each algorithm, on a fixture whose clock stands at t0.
func benchmark(b *testing.B, op func(b *testing.B, f *fixture) func() error) {
	for _, alg := range algorithms {
		b.Run(string(alg), func(b *testing.B) {
			f := newFixture(b, alg)
			run := op(b, f)
			b.ReportAllocs()
			for b.Loop() {
				if err := run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMintAccess(b *testing.B) {
	benchmark(b, func(b *testing.B, f *fixture) func() error {
		return func() error { _, _, err := f.codec.MintAccess(f.session, 1, t0); return err }
	})
}

func BenchmarkMintRefresh(b *testing.B) {
	benchmark(b, func(b *testing.B, f *fixture) func() error {
		return func() error { _, _, err := f.codec.MintRefresh(f.session, 1, t0); return err }
	})
}

// BenchmarkVerifyAccess verifies access tokens the codec has not seen: the full signature and claims check.
func BenchmarkVerifyAccess(b *testing.B) {
	benchmark(b, func(b *testing.B, f *fixture) func() error {
		// More distinct tokens than the codec remembers, so that every verification is a first one.
		tokens := make([]string, 20000)
		for i := range tokens {
			raw, _, err := f.codec.MintAccess(f.session, uint64(i), t0)
			if err != nil {
				b.Fatal(err)
			}
			tokens[i] = raw
		}
		i := 0
		return func() error {
			_, err := f.codec.VerifyAccess(tokens[i%len(tokens)])
			i++
			return err
		}
	})
}

// BenchmarkVerifyAccessAgain verifies one access token over and over, as a resource server introspecting it
// does: after the first, only its times are checked.
func BenchmarkVerifyAccessAgain(b *testing.B) {
	benchmark(b, func(b *testing.B, f *fixture) func() error {
		raw := f.access(b)
		return func() error { _, err := f.codec.VerifyAccess(raw); return err }
	})
}

func BenchmarkVerifyRefresh(b *testing.B) {
	benchmark(b, func(b *testing.B, f *fixture) func() error {
		raw := f.refresh(b)
		return func() error { _, err := f.codec.VerifyRefresh(raw); return err }
	})
}

// BenchmarkRefresh is the token work of one refresh: verify the presented refresh token, then mint the
// next generation's access and refresh tokens. The revocation store's part is not in it.
func BenchmarkRefresh(b *testing.B) {
	benchmark(b, func(b *testing.B, f *fixture) func() error {
		raw := f.refresh(b)
		return func() error {
			claims, err := f.codec.VerifyRefresh(raw)
			if err != nil {
				return err
			}
			s, next := claims.Session(), claims.Generation+1
			if _, _, err := f.codec.MintAccess(s, next, t0); err != nil {
				return err
			}
			_, _, err = f.codec.MintRefresh(s, next, t0)
			return err
		}
	})
}

// BenchmarkVerifyRefused measures refusing garbage of the largest accepted size, what an attacker pays
// nothing to send.
func BenchmarkVerifyRefused(b *testing.B) {
	f := newFixture(b, v1alpha1.EdDSA)
	raw := f.forge(b, f.access(b), func(h, c map[string]any) { c["pad"] = strings.Repeat("a", 5500) })
	raw = raw[:len(raw)-2] + "AA" // a bad signature over a token just under MaxTokenSize
	if len(raw) > token.MaxTokenSize || len(raw) < token.MaxTokenSize-1024 {
		b.Fatalf("got a token of %d bytes; want one just under %d", len(raw), token.MaxTokenSize)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.codec.VerifyAccess(raw); err == nil {
			b.Fatal("got the token accepted; want it refused")
		}
	}
}

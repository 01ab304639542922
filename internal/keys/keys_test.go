package keys

import (
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"math/big"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// TestTheKeyIDIsTheRFC7638Thumbprint checks the thumbprint against the example of RFC 7638 section 3.1.
func TestTheKeyIDIsTheRFC7638Thumbprint(t *testing.T) {
	n, _ := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	e, _ := base64.RawURLEncoding.DecodeString("AQAB")
	k := &Key{Algorithm: v1alpha1.RS256, Public: &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}}
	jwk, err := k.publicJWK()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := jwk.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("thumbprint: got %s; want %s", got, want)
	}
}

func TestKeysRoundTripThroughASecret(t *testing.T) {
	for _, alg := range []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.RS256, v1alpha1.HS256} {
		t.Run(string(alg), func(t *testing.T) {
			a, err := Generate(alg)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Generate(alg)
			if err != nil {
				t.Fatal(err)
			}
			if a.ID == b.ID {
				t.Fatalf("two generated keys share the id %s", a.ID)
			}
			secret := &corev1.Secret{Data: map[string][]byte{}}
			secret.Annotations = map[string]string{v1alpha1.AnnotationActiveKey: b.ID}
			for _, k := range []*Key{a, b} {
				data, err := k.Encode()
				if err != nil {
					t.Fatal(err)
				}
				secret.Data[k.DataKey()] = data
			}
			set, err := FromSecret(alg, secret)
			if err != nil {
				t.Fatal(err)
			}
			if set.Active.ID != b.ID || len(set.IDs()) != 2 {
				t.Fatalf("active %s of %v; want %s of two", set.Active.ID, set.IDs(), b.ID)
			}
			jwks, err := set.PublicJWKS()
			if err != nil {
				t.Fatal(err)
			}
			want := 2
			if alg.Symmetric() {
				want = 0
			}
			if len(jwks.Keys) != want {
				t.Fatalf("JWKS: %d keys; want %d", len(jwks.Keys), want)
			}
			// A key of another algorithm is refused, whatever its entry says.
			if _, err := FromSecret(other(alg), secret); !errors.Is(err, ErrMalformed) {
				t.Fatalf("reading %s keys as %s: got %v; want ErrMalformed", alg, other(alg), err)
			}
		})
	}
}

func other(alg v1alpha1.SigningAlgorithm) v1alpha1.SigningAlgorithm {
	if alg == v1alpha1.EdDSA {
		return v1alpha1.ES256
	}
	return v1alpha1.EdDSA
}

func TestAShortHMACKeyIsRefused(t *testing.T) {
	if _, err := Decode(v1alpha1.HS256, "k.key", make([]byte, MinHMACBytes-1)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a %d-byte HS256 key: got %v; want ErrMalformed", MinHMACBytes-1, err)
	}
}

package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

const (
	// PEMSuffix ends the Secret data key of an asymmetric private key: <kid>.pem, PKCS#8, SEC 1 or PKCS#1.
	PEMSuffix = ".pem"
	// HMACSuffix ends the Secret data key of an HS256 key: <kid>.key, at least 32 random bytes.
	HMACSuffix = ".key"
	// MinHMACBytes is the shortest HS256 key accepted: as long as the hash output (RFC 7518 section 3.2).
	MinHMACBytes = 32
	rsaBits      = 2048
)

// ErrMalformed is wrapped by every error about key material that cannot be used.
var ErrMalformed = errors.New("malformed signing key")

// Key is one signing key. For HS256 Secret holds the shared key and Signer and Public are nil.
type Key struct {
	ID        string
	Algorithm v1alpha1.SigningAlgorithm
	Signer    crypto.Signer
	Public    crypto.PublicKey
	Secret    []byte
}

// SigningKey is what golang-jwt signs with: a crypto.Signer's concrete private key, or the HMAC secret.
func (k *Key) SigningKey() any {
	if k.Algorithm.Symmetric() {
		return k.Secret
	}
	return k.Signer
}

// VerificationKey is what golang-jwt verifies with: the public key, or the HMAC secret.
func (k *Key) VerificationKey() any {
	if k.Algorithm.Symmetric() {
		return k.Secret
	}
	return k.Public
}

// DataKey is the key of the Secret entry that holds k.
func (k *Key) DataKey() string {
	if k.Algorithm.Symmetric() {
		return k.ID + HMACSuffix
	}
	return k.ID + PEMSuffix
}

// Generate makes a new key for alg with a fresh key id.
func Generate(alg v1alpha1.SigningAlgorithm) (*Key, error) {
	var signer crypto.Signer
	var err error
	switch alg {
	case v1alpha1.EdDSA:
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	case v1alpha1.ES256:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case v1alpha1.RS256:
		signer, err = rsa.GenerateKey(rand.Reader, rsaBits)
	case v1alpha1.HS256:
		secret := make([]byte, MinHMACBytes)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("generate HS256 key: %w", err)
		}
		id := make([]byte, 12)
		if _, err := rand.Read(id); err != nil {
			return nil, fmt.Errorf("generate HS256 key id: %w", err)
		}
		return &Key{ID: base64.RawURLEncoding.EncodeToString(id), Algorithm: alg, Secret: secret}, nil
	default:
		return nil, fmt.Errorf("generate key: unsupported algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	return newAsymmetric(alg, signer)
}

func newAsymmetric(alg v1alpha1.SigningAlgorithm, signer crypto.Signer) (*Key, error) {
	k := &Key{Algorithm: alg, Signer: signer, Public: signer.Public()}
	jwk, err := k.publicJWK()
	if err != nil {
		return nil, err
	}
	k.ID = jwk.thumbprint()
	return k, nil
}

// Encode returns the bytes stored in the Secret entry DataKey.
func (k *Key) Encode() ([]byte, error) {
	if k.Algorithm.Symmetric() {
		return append([]byte(nil), k.Secret...), nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
	if err != nil {
		return nil, fmt.Errorf("encode key %s: %w", k.ID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Decode parses one Secret entry as a key of alg. The kid is the data key without its suffix.
func Decode(alg v1alpha1.SigningAlgorithm, dataKey string, data []byte) (*Key, error) {
	if alg.Symmetric() {
		kid, ok := strings.CutSuffix(dataKey, HMACSuffix)
		if !ok || kid == "" {
			return nil, fmt.Errorf("%w: entry %q: HS256 keys are stored as <kid>%s", ErrMalformed, dataKey, HMACSuffix)
		}
		if len(data) < MinHMACBytes {
			return nil, fmt.Errorf("%w: entry %q: HS256 key has %d bytes, want at least %d", ErrMalformed, dataKey, len(data), MinHMACBytes)
		}
		return &Key{ID: kid, Algorithm: alg, Secret: append([]byte(nil), data...)}, nil
	}
	kid, ok := strings.CutSuffix(dataKey, PEMSuffix)
	if !ok || kid == "" {
		return nil, fmt.Errorf("%w: entry %q: %s keys are stored as <kid>%s", ErrMalformed, dataKey, alg, PEMSuffix)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: entry %q: no PEM block", ErrMalformed, dataKey)
	}
	priv, err := parsePrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: entry %q: %v", ErrMalformed, dataKey, err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok || !matches(alg, signer) {
		return nil, fmt.Errorf("%w: entry %q: a %T cannot sign %s", ErrMalformed, dataKey, priv, alg)
	}
	return &Key{ID: kid, Algorithm: alg, Signer: signer, Public: signer.Public()}, nil
}

func parsePrivateKey(der []byte) (any, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS#8, SEC 1 or PKCS#1 private key")
}

func matches(alg v1alpha1.SigningAlgorithm, signer crypto.Signer) bool {
	switch k := signer.(type) {
	case ed25519.PrivateKey:
		return alg == v1alpha1.EdDSA
	case *ecdsa.PrivateKey:
		return alg == v1alpha1.ES256 && k.Curve == elliptic.P256()
	case *rsa.PrivateKey:
		return alg == v1alpha1.RS256 && k.N.BitLen() >= rsaBits
	}
	return false
}

// Set is the keys of one policy: every key verifies, Active signs.
type Set struct {
	Algorithm v1alpha1.SigningAlgorithm
	Active    *Key
	byID      map[string]*Key
	ids       []string
}

// NewSet builds a set in which active signs; keys lists every key that verifies, active included.
func NewSet(alg v1alpha1.SigningAlgorithm, active string, keys []*Key) (*Set, error) {
	s := &Set{Algorithm: alg, byID: make(map[string]*Key, len(keys))}
	for _, k := range keys {
		if k.Algorithm != alg {
			return nil, fmt.Errorf("%w: key %s is %s, the policy signs %s", ErrMalformed, k.ID, k.Algorithm, alg)
		}
		if _, dup := s.byID[k.ID]; dup {
			return nil, fmt.Errorf("%w: key id %s appears twice", ErrMalformed, k.ID)
		}
		s.byID[k.ID] = k
		s.ids = append(s.ids, k.ID)
	}
	sort.Strings(s.ids)
	if active == "" && len(keys) == 1 {
		active = keys[0].ID
	}
	s.Active = s.byID[active]
	if s.Active == nil {
		if active == "" {
			return nil, fmt.Errorf("%w: %d keys and no %s annotation to say which signs", ErrMalformed, len(keys), v1alpha1.AnnotationActiveKey)
		}
		return nil, fmt.Errorf("%w: active key %q is not among the keys", ErrMalformed, active)
	}
	return s, nil
}

// FromSecret reads every key of a signing-key Secret; the tokenwarden.io/active-key annotation, or the only
// key, signs. Entries that are not keys (no .pem or .key suffix) are ignored.
func FromSecret(alg v1alpha1.SigningAlgorithm, secret *corev1.Secret) (*Set, error) {
	var list []*Key
	for name, data := range secret.Data {
		if !strings.HasSuffix(name, PEMSuffix) && !strings.HasSuffix(name, HMACSuffix) {
			continue
		}
		k, err := Decode(alg, name, data)
		if err != nil {
			return nil, fmt.Errorf("secret %s/%s: %w", secret.Namespace, secret.Name, err)
		}
		list = append(list, k)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("secret %s/%s: %w: no <kid>%s or <kid>%s entries", secret.Namespace, secret.Name, ErrMalformed, PEMSuffix, HMACSuffix)
	}
	s, err := NewSet(alg, secret.Annotations[v1alpha1.AnnotationActiveKey], list)
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return s, nil
}

// Get returns the key with id kid.
func (s *Set) Get(kid string) (*Key, bool) {
	k, ok := s.byID[kid]
	return k, ok
}

// IDs returns every key id in the set, sorted.
func (s *Set) IDs() []string { return append([]string(nil), s.ids...) }

// JWK is a public JSON Web Key (RFC 7517, 7518, 8037).
type JWK struct {
	KeyType   string `json:"kty"`
	Use       string `json:"use,omitempty"`
	Algorithm string `json:"alg,omitempty"`
	KeyID     string `json:"kid,omitempty"`
	Curve     string `json:"crv,omitempty"`
	X         string `json:"x,omitempty"`
	Y         string `json:"y,omitempty"`
	N         string `json:"n,omitempty"`
	E         string `json:"e,omitempty"`
}

// JWKS is a JSON Web Key Set.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

func (k *Key) publicJWK() (JWK, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch pub := k.Public.(type) {
	case ed25519.PublicKey:
		return JWK{KeyType: "OKP", Curve: "Ed25519", X: b64(pub)}, nil
	case *ecdsa.PublicKey:
		ecdh, err := pub.ECDH()
		if err != nil {
			return JWK{}, fmt.Errorf("encode EC key: %w", err)
		}
		raw := ecdh.Bytes() // 0x04 || X || Y, each 32 bytes for P-256
		return JWK{KeyType: "EC", Curve: "P-256", X: b64(raw[1:33]), Y: b64(raw[33:])}, nil
	case *rsa.PublicKey:
		return JWK{KeyType: "RSA", N: b64(pub.N.Bytes()), E: b64(big.NewInt(int64(pub.E)).Bytes())}, nil
	}
	return JWK{}, fmt.Errorf("%w: no JWK form for %T", ErrMalformed, k.Public)
}

// thumbprint is the RFC 7638 SHA-256 thumbprint: the required members, in lexicographic order, no spaces.
func (j JWK) thumbprint() string {
	var canonical string
	switch j.KeyType {
	case "OKP":
		canonical = fmt.Sprintf(`{"crv":%q,"kty":"OKP","x":%q}`, j.Curve, j.X)
	case "EC":
		canonical = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, j.Curve, j.X, j.Y)
	case "RSA":
		canonical = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, j.E, j.N)
	}
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// PublicJWKS is the set's public keys, sorted by kid. An HS256 set publishes none.
func (s *Set) PublicJWKS() (JWKS, error) {
	return PublicJWKS(s.Algorithm, s.keysInOrder())
}

func (s *Set) keysInOrder() []*Key {
	out := make([]*Key, 0, len(s.ids))
	for _, id := range s.ids {
		out = append(out, s.byID[id])
	}
	return out
}

// PublicJWKS is the public JWK Set of keys; symmetric keys are left out.
func PublicJWKS(alg v1alpha1.SigningAlgorithm, list []*Key) (JWKS, error) {
	set := JWKS{Keys: []JWK{}}
	if alg.Symmetric() {
		return set, nil
	}
	for _, k := range list {
		jwk, err := k.publicJWK()
		if err != nil {
			return JWKS{}, err
		}
		jwk.Use, jwk.Algorithm, jwk.KeyID = "sig", string(alg), k.ID
		set.Keys = append(set.Keys, jwk)
	}
	sort.Slice(set.Keys, func(i, j int) bool { return set.Keys[i].KeyID < set.Keys[j].KeyID })
	return set, nil
}

// Marshal encodes the set as indented JSON, the form stored in the JWKS ConfigMap.
func (j JWKS) Marshal() ([]byte, error) {
	return json.MarshalIndent(j, "", "  ")
}

// Data is the set in the Secret format FromSecret reads: every key under its DataKey, and the kid that
// signs, for the tokenwarden.io/active-key annotation.
func (s *Set) Data() (map[string][]byte, string, error) {
	data := make(map[string][]byte, len(s.byID))
	for _, k := range s.byID {
		b, err := k.Encode()
		if err != nil {
			return nil, "", err
		}
		data[k.DataKey()] = b
	}
	return data, s.Active.ID, nil
}

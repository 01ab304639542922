package token

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/utils/clock"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
)

const (
	// AccessType is the typ header of access tokens (RFC 9068 section 2.1).
	AccessType = "at+jwt"
	// RefreshType is the typ header of refresh tokens.
	RefreshType = "rt+jwt"
	// MaxTokenSize is the longest token, in bytes, that is minted or read; longer input is refused before
	// it is parsed.
	MaxTokenSize = 8 << 10
	// DefaultLeeway is the clock skew between issuer replicas that verification tolerates when a Policy
	// sets none.
	DefaultLeeway = 5 * time.Second
)

// Every error of VerifyAccess and VerifyRefresh is a refusal and wraps exactly one of these. The header is
// checked before the signature and the claims after it, so ErrWrongIssuer, ErrWrongAudience, ErrExpired
// and ErrNotYetValid are only ever said of a token the policy's key signed.
var (
	// ErrMalformed: not a token this package mints. Empty, longer than MaxTokenSize, a byte outside
	// base64url and '.', not three segments, bad base64 or JSON, or a required claim missing or of the
	// wrong JSON type.
	ErrMalformed = errors.New("malformed token")
	// ErrUnknownKey: the kid header is missing or names no key of the policy.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrWrongType: the typ header is not the kind asked for, e.g. a refresh token presented as an access
	// token.
	ErrWrongType = errors.New("wrong token type")
	// ErrSignature: the alg header is missing or not the policy's algorithm, or the signature does not
	// verify with the key the kid names.
	ErrSignature = errors.New("invalid signature")
	// ErrWrongIssuer: iss is not the policy's issuer.
	ErrWrongIssuer = errors.New("wrong issuer")
	// ErrWrongAudience: aud names none of the policy's audiences (access) or not the issuer (refresh).
	ErrWrongAudience = errors.New("wrong audience")
	// ErrExpired: exp plus the leeway has passed. Minting wraps it too when the session has already
	// ended, so that a refresh in the leeway after a session's end is refused the same way.
	ErrExpired = errors.New("expired")
	// ErrNotYetValid: iat is later than now plus the leeway.
	ErrNotYetValid = errors.New("not yet valid")
)

// Policy is what the codec of one TokenPolicy needs to know.
type Policy struct {
	// Issuer is the iss claim of every token and the aud claim of refresh tokens: an absolute http(s)
	// URL without query or fragment.
	Issuer string
	// Audiences is the aud claim of access tokens; none of them may be the issuer.
	Audiences []string
	// AccessLifetime is how long an access token lives, in whole seconds, at least one.
	AccessLifetime time.Duration
	// Keys verify tokens by kid; Keys.Active signs. New takes what it needs, so later changes to the set
	// do not reach the codec.
	Keys *keys.Set
	// Leeway is the clock skew tolerated on exp and iat; zero means DefaultLeeway.
	Leeway time.Duration
}

// Codec mints and verifies the tokens of one policy. It is immutable and safe for concurrent use; build a
// new one when the policy or its keys change.
type Codec struct {
	issuer         string
	audiences      []string
	accessLifetime int64 // seconds
	method         jwt.SigningMethod
	signingKey     any
	sigLen         int // encoded length of a signature of the active key
	verifyKeys     map[string]any
	access         kind
	refresh        kind
	clock          clock.PassiveClock
	leeway         time.Duration
	verified       *verifiedCache // access tokens that verified, for resource servers that introspect them again
}

// kind is what differs between access and refresh tokens.
type kind struct {
	name      string // for error messages
	typ       string
	jtiPrefix string
	header    string // the encoded JOSE header of minted tokens: alg, kid of the active key, typ
	parser    *jwt.Parser
	keyFunc   jwt.Keyfunc
}

// New validates p and builds its codec. clk is the time tokens are verified at.
func New(p Policy, clk clock.PassiveClock) (*Codec, error) {
	if clk == nil {
		return nil, errors.New("token policy: no clock")
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("token policy: %w", err)
	}
	alg := string(p.Keys.Algorithm)
	c := &Codec{
		issuer:         p.Issuer,
		audiences:      slices.Clone(p.Audiences),
		accessLifetime: int64(p.AccessLifetime / time.Second),
		method:         jwt.GetSigningMethod(alg),
		signingKey:     p.Keys.Active.SigningKey(),
		verifyKeys:     make(map[string]any),
	}
	for _, id := range p.Keys.IDs() {
		k, _ := p.Keys.Get(id)
		if id == "" || k.VerificationKey() == nil || (k.Algorithm.Symmetric() && len(k.Secret) < keys.MinHMACBytes) {
			// An empty HMAC secret would verify whatever anyone signs with an empty secret.
			return nil, fmt.Errorf("token policy: key %q cannot verify", id)
		}
		c.verifyKeys[id] = k.VerificationKey()
	}
	if _, ok := c.verifyKeys[p.Keys.Active.ID]; !ok {
		return nil, fmt.Errorf("token policy: active key %q is not among the keys", p.Keys.Active.ID)
	}
	// Sign once to learn the signature length, and to find out now rather than at the first login that
	// the active key cannot sign, or that its public half does not match.
	const probe = "probe"
	sig, err := c.method.Sign(probe, c.signingKey)
	if err == nil {
		err = c.method.Verify(probe, sig, c.verifyKeys[p.Keys.Active.ID])
	}
	if err != nil {
		return nil, fmt.Errorf("token policy: active key %s cannot sign %s: %w", p.Keys.Active.ID, alg, err)
	}
	c.sigLen = base64.RawURLEncoding.EncodedLen(len(sig))

	leeway := p.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	c.clock, c.leeway, c.verified = clk, leeway, newVerifiedCache(verifiedCacheSize)
	c.access = c.newKind("access token", AccessType, "at|", p.Keys.Active.ID, leeway, clk, c.audiences...)
	c.refresh = c.newKind("refresh token", RefreshType, "rt|", p.Keys.Active.ID, leeway, clk, c.issuer)
	return c, nil
}

func (p *Policy) validate() error {
	u, err := url.Parse(p.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("issuer %q is not an absolute http(s) URL without query or fragment", p.Issuer)
	}
	if len(p.Audiences) == 0 {
		return errors.New("no audiences")
	}
	for _, a := range p.Audiences {
		if a == "" {
			return errors.New("an empty audience")
		}
		if a == p.Issuer {
			// Refresh tokens are addressed to the issuer; an access token must never be addressed the same.
			return fmt.Errorf("audience %q is the issuer", a)
		}
	}
	if p.AccessLifetime < time.Second {
		return fmt.Errorf("access token lifetime %s is shorter than a second", p.AccessLifetime)
	}
	if p.Leeway < 0 {
		return fmt.Errorf("negative leeway %s", p.Leeway)
	}
	if p.Keys == nil || p.Keys.Active == nil {
		return errors.New("no signing key")
	}
	switch p.Keys.Algorithm {
	case v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.RS256, v1alpha1.HS256:
	default:
		return fmt.Errorf("unsupported algorithm %q", p.Keys.Algorithm)
	}
	if p.Keys.Active.Algorithm != p.Keys.Algorithm {
		return fmt.Errorf("active key %s is %s, the policy signs %s", p.Keys.Active.ID, p.Keys.Active.Algorithm, p.Keys.Algorithm)
	}
	return nil
}

func (c *Codec) newKind(name, typ, jtiPrefix, kid string, leeway time.Duration, clk clock.PassiveClock, aud ...string) kind {
	alg := c.method.Alg()
	header, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "typ": typ}) // strings always encode
	return kind{
		name:      name,
		typ:       typ,
		jtiPrefix: jtiPrefix,
		header:    base64.RawURLEncoding.EncodeToString(header),
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{alg}),
			jwt.WithStrictDecoding(), // one encoding per signature: no second spelling of a token verifies
			jwt.WithIssuer(c.issuer),
			jwt.WithAudience(aud...),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(leeway),
			jwt.WithTimeFunc(clk.Now),
		),
		keyFunc: func(t *jwt.Token) (any, error) {
			if t.Method.Alg() != alg { // WithValidMethods has refused it already; never trust one check alone
				return nil, ErrSignature
			}
			kid, _ := t.Header["kid"].(string)
			key, ok := c.verifyKeys[kid]
			if !ok {
				return nil, ErrUnknownKey
			}
			if got, _ := t.Header["typ"].(string); got != typ {
				return nil, ErrWrongType
			}
			return key, nil
		},
	}
}

// MintAccess signs the access token of generation gen of session s, issued at issuedAt. It expires
// AccessLifetime later, or when the session ends if that is sooner; if the session has ended by issuedAt
// the error wraps ErrExpired. Minting the same (s, gen, issuedAt) again gives the same claims, and for
// EdDSA, RS256 and HS256 the same token.
func (c *Codec) MintAccess(s Session, gen uint64, issuedAt time.Time) (string, *AccessClaims, error) {
	iat := issuedAt.Unix()
	exp := iat + c.accessLifetime
	if err := s.check(issuedAt, false); err != nil {
		return "", nil, fmt.Errorf("mint access token for session %q: %w", s.ID, err)
	}
	if !s.Expiry.IsZero() {
		exp = min(exp, s.Expiry.Unix())
	}
	claims := &AccessClaims{
		Issuer:    c.issuer,
		Subject:   s.Subject,
		Audience:  slices.Clone(c.audiences), // the caller may change its copy; the codec's stays as it is
		ExpiresAt: NumericDate(exp),
		IssuedAt:  NumericDate(iat),
		AuthTime:  NumericDate(s.AuthTime.Unix()),
		ID:        tokenID(c.access.jtiPrefix, s.ID, gen),
		ClientID:  s.ClientID,
		SessionID: s.ID,
		Scope:     s.Scope,
		Binding:   s.Binding,
	}
	if !s.Expiry.IsZero() {
		claims.SessionExpiry = NumericDate(s.Expiry.Unix())
	}
	raw, err := c.sign(&c.access, claims)
	if err != nil {
		return "", nil, fmt.Errorf("mint access token for session %q: %w", s.ID, err)
	}
	return raw, claims, nil
}

// MintRefresh signs the refresh token of generation gen of session s, issued at issuedAt. It expires when
// the session does; if the session has ended by issuedAt the error wraps ErrExpired. Minting the same
// (s, gen, issuedAt) again gives the same claims, and for EdDSA, RS256 and HS256 the same token.
func (c *Codec) MintRefresh(s Session, gen uint64, issuedAt time.Time) (string, *RefreshClaims, error) {
	if err := s.check(issuedAt, true); err != nil {
		return "", nil, fmt.Errorf("mint refresh token for session %q: %w", s.ID, err)
	}
	claims := &RefreshClaims{
		Issuer:     c.issuer,
		Subject:    s.Subject,
		Audience:   []string{c.issuer},
		ExpiresAt:  NumericDate(s.Expiry.Unix()),
		IssuedAt:   NumericDate(issuedAt.Unix()),
		AuthTime:   NumericDate(s.AuthTime.Unix()),
		ID:         tokenID(c.refresh.jtiPrefix, s.ID, gen),
		ClientID:   s.ClientID,
		SessionID:  s.ID,
		Generation: gen,
		Scope:      s.Scope,
		Binding:    s.Binding,
	}
	raw, err := c.sign(&c.refresh, claims)
	if err != nil {
		return "", nil, fmt.Errorf("mint refresh token for session %q: %w", s.ID, err)
	}
	return raw, claims, nil
}

// check says what keeps s from getting a token issued at issuedAt.
func (s *Session) check(issuedAt time.Time, refresh bool) error {
	switch {
	case s.ID == "":
		return errors.New("no session id")
	case s.Subject == "":
		return errors.New("no subject")
	case issuedAt.IsZero():
		return errors.New("no issue time")
	case s.AuthTime.IsZero():
		return errors.New("no authentication time")
	case refresh && s.Expiry.IsZero():
		return errors.New("no session expiry")
	case !s.Expiry.IsZero() && issuedAt.Unix() >= s.Expiry.Unix():
		return fmt.Errorf("%w: the session ended at %s", ErrExpired, s.Expiry.UTC().Format(time.RFC3339))
	}
	return nil
}

// tokenID is the jti of the token of kind prefix of generation gen of session sid: the first 128 bits of
// SHA-256(prefix || sid || "|" || gen), base64url. The generation, a decimal number, ends the input, so no
// two (sid, gen) pairs share it.
func tokenID(prefix, sid string, gen uint64) string {
	var buf [64]byte
	in := append(buf[:0], prefix...)
	in = append(in, sid...)
	in = append(in, '|')
	in = strconv.AppendUint(in, gen, 10)
	sum := sha256.Sum256(in)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// sign encodes claims behind k's header and signs them with the active key. It builds the token in one
// buffer; the result is what jwt.NewWithClaims(...).SignedString would give for the same header.
func (c *Codec) sign(k *kind, claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	enc := base64.RawURLEncoding
	size := len(k.header) + 1 + enc.EncodedLen(len(payload)) + 1 + c.sigLen
	if size > MaxTokenSize {
		return "", fmt.Errorf("the token would have %d bytes, more than %d", size, MaxTokenSize)
	}
	buf := make([]byte, 0, size)
	buf = append(buf, k.header...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	sig, err := c.method.Sign(string(buf), c.signingKey)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), nil
}

// VerifyAccess returns the claims of raw if it is an access token of the policy that is valid now. A token
// that verified before (resource servers introspect the same token again and again) is not verified again:
// its claims are remembered, by the token's digest, and only its times are checked anew.
func (c *Codec) VerifyAccess(raw string) (*AccessClaims, error) {
	if cached, ok := c.verified.get(raw); ok {
		now := c.clock.Now()
		switch {
		case !now.Before(cached.ExpiresAt.Time().Add(c.leeway)):
			return nil, c.access.refuse(ErrExpired, "exp "+cached.ExpiresAt.Time().UTC().Format(time.RFC3339))
		case now.Before(cached.IssuedAt.Time().Add(-c.leeway)):
			return nil, c.access.refuse(ErrNotYetValid, "iat "+cached.IssuedAt.Time().UTC().Format(time.RFC3339))
		}
		claims := *cached
		claims.Audience = slices.Clone(cached.Audience)
		return &claims, nil
	}
	claims := new(AccessClaims)
	if err := c.verify(&c.access, raw, claims); err != nil {
		return nil, err
	}
	remembered := *claims
	remembered.Audience = slices.Clone(claims.Audience)
	c.verified.put(raw, &remembered)
	return claims, nil
}

// VerifyRefresh returns the claims of raw if it is a refresh token of the policy that is valid now. Whether
// its generation is still the session's current one is the caller's to decide.
func (c *Codec) VerifyRefresh(raw string) (*RefreshClaims, error) {
	claims := new(RefreshClaims)
	if err := c.verify(&c.refresh, raw, claims); err != nil {
		return nil, err
	}
	return claims, nil
}

type claims interface {
	jwt.Claims
	missing() string
}

func (c *Codec) verify(k *kind, raw string, cl claims) error {
	switch {
	case raw == "":
		return k.refuse(ErrMalformed, "empty")
	case len(raw) > MaxTokenSize:
		return k.refuse(ErrMalformed, fmt.Sprintf("%d bytes, more than %d", len(raw), MaxTokenSize))
	}
	// The base64 decoder skips CR and LF; refusing every byte a token cannot hold keeps one spelling per
	// token.
	for i := 0; i < len(raw); i++ {
		if !isTokenByte(raw[i]) {
			return k.refuse(ErrMalformed, fmt.Sprintf("byte %d is not base64url or '.'", i))
		}
	}
	t, err := k.parser.ParseWithClaims(raw, cl, k.keyFunc)
	if err != nil {
		return k.refusal(t, cl, err)
	}
	if name := cl.missing(); name != "" {
		return k.refuse(ErrMalformed, "no "+name+" claim")
	}
	return nil
}

func isTokenByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_' || b == '.'
}

func (k *kind) refuse(reason error, detail string) error {
	return fmt.Errorf("verify %s: %w: %s", k.name, reason, detail)
}

// refusal turns an error of golang-jwt into one wrapping exactly one sentinel of this package. Nothing of
// the token goes into it but header values and claims, quoted and cut short.
func (k *kind) refusal(t *jwt.Token, cl claims, err error) error {
	switch {
	case errors.Is(err, ErrUnknownKey):
		kid, ok := header(t, "kid")
		if !ok {
			return k.refuse(ErrUnknownKey, "no kid header")
		}
		return k.refuse(ErrUnknownKey, fmt.Sprintf("kid %.64q", kid))
	case errors.Is(err, ErrWrongType):
		typ, _ := header(t, "typ")
		return k.refuse(ErrWrongType, fmt.Sprintf("typ %.32q, want %q", typ, k.typ))
	case errors.Is(err, jwt.ErrTokenMalformed),
		errors.Is(err, jwt.ErrTokenRequiredClaimMissing),
		errors.Is(err, jwt.ErrInvalidType):
		return k.refuse(ErrMalformed, err.Error())
	case errors.Is(err, ErrSignature),
		errors.Is(err, jwt.ErrTokenSignatureInvalid),
		errors.Is(err, jwt.ErrTokenUnverifiable): // no alg, or one golang-jwt does not know
		return k.refuse(ErrSignature, err.Error())
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		iss, _ := cl.GetIssuer()
		return k.refuse(ErrWrongIssuer, fmt.Sprintf("iss %.64q", iss))
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		aud, _ := cl.GetAudience()
		return k.refuse(ErrWrongAudience, fmt.Sprintf("aud %.64q", aud))
	case errors.Is(err, jwt.ErrTokenExpired):
		exp, _ := cl.GetExpirationTime()
		return k.refuse(ErrExpired, "exp "+exp.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued), errors.Is(err, jwt.ErrTokenNotValidYet):
		iat, _ := cl.GetIssuedAt()
		return k.refuse(ErrNotYetValid, "iat "+iat.UTC().Format(time.RFC3339))
	}
	return k.refuse(ErrMalformed, err.Error())
}

func header(t *jwt.Token, name string) (string, bool) {
	if t == nil {
		return "", false
	}
	v, ok := t.Header[name].(string)
	return v, ok && v != ""
}

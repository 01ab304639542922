package token

import (
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// NumericDate is a JWT NumericDate (RFC 7519 section 2) in whole seconds since the Unix epoch, the form
// the tokens carry. It encodes as a plain JSON integer, so no package-global setting of golang-jwt changes
// what is minted, and a fractional or string date in a payload is refused as malformed.
type NumericDate int64

// Time is d as a time.Time.
func (d NumericDate) Time() time.Time { return time.Unix(int64(d), 0) }

// jwtDate is d as golang-jwt's validator reads it; zero, which is never minted, means absent.
func (d NumericDate) jwtDate() *jwt.NumericDate {
	if d == 0 {
		return nil
	}
	return &jwt.NumericDate{Time: d.Time()}
}

// Session is what a token says about the login it belongs to.
type Session struct {
	// ID is the session id (revocation.NewSessionID): the sid claim of both kinds of token.
	ID string
	// Subject is who logged in: the sub claim.
	Subject string
	// ClientID is the OAuth client the session was issued to; empty leaves client_id out.
	ClientID string
	// AuthTime is when the subject logged in: the auth_time claim of both kinds of token, which a
	// subject-wide "revoked before" mark is compared with.
	AuthTime time.Time
	// Expiry is the session's absolute end: the exp claim of refresh tokens, and a cap on the exp claim
	// of access tokens. Zero means no cap for access tokens; refresh tokens need it.
	Expiry time.Time
	// Scope is the space-separated scope granted; empty leaves scope out.
	Scope string
	// Binding is the identity the session was opened for; nil for none.
	Binding *Binding
}

// Binding is the identity a session was opened for, as both kinds of token carry it (the bind claim), so
// that the session ends when that identity does: a user removed or whose password changed, a
// ServiceAccount deleted or created again under the same name, the Pod a ServiceAccount token was bound to
// gone. It holds no secret: a password is represented by a digest of its bcrypt hash, which tells one
// hash from another and nothing more.
type Binding struct {
	// Password is the fingerprint of the password hash the user logged in with (login.Fingerprint).
	Password string `json:"pwd,omitempty"`
	// ServiceAccountUID is the UID of the ServiceAccount whose token was exchanged.
	ServiceAccountUID string `json:"sa,omitempty"`
	// PodUID is the UID of the Pod that ServiceAccount token was bound to; empty for an unbound token.
	PodUID string `json:"pod,omitempty"`
}

// AccessClaims is the payload of an access token (RFC 9068 section 2.2). Resource servers see exactly
// these members.
type AccessClaims struct {
	Issuer    string      `json:"iss"`
	Subject   string      `json:"sub"`
	Audience  []string    `json:"aud"` // always a JSON array
	ExpiresAt NumericDate `json:"exp"`
	IssuedAt  NumericDate `json:"iat"`
	AuthTime  NumericDate `json:"auth_time"`
	ID        string      `json:"jti"` // derived from (sid, generation); equal for re-mints of one generation
	ClientID  string      `json:"client_id,omitempty"`
	SessionID string      `json:"sid"`
	Scope     string      `json:"scope,omitempty"`
	// SessionExpiry is the session's absolute end, so that revoking an access token records its session
	// for as long as the session can last, whatever the policy says later.
	SessionExpiry NumericDate `json:"session_exp,omitempty"`
	Binding       *Binding    `json:"bind,omitempty"`
}

// RefreshClaims is the payload of a refresh token. Its audience is the issuer itself, so no resource
// server configured for the policy's audiences accepts it.
type RefreshClaims struct {
	Issuer     string      `json:"iss"`
	Subject    string      `json:"sub"`
	Audience   []string    `json:"aud"` // exactly [issuer]
	ExpiresAt  NumericDate `json:"exp"` // the session's absolute expiry
	IssuedAt   NumericDate `json:"iat"` // when this generation was issued
	AuthTime   NumericDate `json:"auth_time"`
	ID         string      `json:"jti"` // derived from (sid, generation)
	ClientID   string      `json:"client_id,omitempty"`
	SessionID  string      `json:"sid"`
	Generation uint64      `json:"gen"`
	Scope      string      `json:"scope,omitempty"`
	Binding    *Binding    `json:"bind,omitempty"`
}

// Session rebuilds the session a verified refresh token was minted for, to mint its successor.
func (c *RefreshClaims) Session() Session {
	return Session{
		ID:       c.SessionID,
		Subject:  c.Subject,
		ClientID: c.ClientID,
		AuthTime: c.AuthTime.Time(),
		Expiry:   c.ExpiresAt.Time(),
		Scope:    c.Scope,
		Binding:  c.Binding,
	}
}

// missing names the first claim that every token of the kind carries but this one lacks, or is "".
// golang-jwt has already required exp, iss and aud.
func (c *AccessClaims) missing() string {
	switch {
	case c.IssuedAt == 0:
		return "iat"
	case c.Subject == "":
		return "sub"
	case c.SessionID == "":
		return "sid"
	case c.ID == "":
		return "jti"
	case c.AuthTime == 0:
		return "auth_time"
	}
	return ""
}

func (c *RefreshClaims) missing() string {
	switch {
	case c.IssuedAt == 0:
		return "iat"
	case c.Subject == "":
		return "sub"
	case c.SessionID == "":
		return "sid"
	case c.ID == "":
		return "jti"
	case c.AuthTime == 0:
		return "auth_time"
	}
	return ""
}

// The jwt.Claims methods are what golang-jwt's validator checks exp, iat, iss and aud with.

// GetExpirationTime implements jwt.Claims.
func (c *AccessClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return c.ExpiresAt.jwtDate(), nil
}

// GetIssuedAt implements jwt.Claims.
func (c *AccessClaims) GetIssuedAt() (*jwt.NumericDate, error) { return c.IssuedAt.jwtDate(), nil }

// GetNotBefore implements jwt.Claims; tokens carry no nbf.
func (c *AccessClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }

// GetIssuer implements jwt.Claims.
func (c *AccessClaims) GetIssuer() (string, error) { return c.Issuer, nil }

// GetSubject implements jwt.Claims.
func (c *AccessClaims) GetSubject() (string, error) { return c.Subject, nil }

// GetAudience implements jwt.Claims.
func (c *AccessClaims) GetAudience() (jwt.ClaimStrings, error) { return c.Audience, nil }

// GetExpirationTime implements jwt.Claims.
func (c *RefreshClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return c.ExpiresAt.jwtDate(), nil
}

// GetIssuedAt implements jwt.Claims.
func (c *RefreshClaims) GetIssuedAt() (*jwt.NumericDate, error) { return c.IssuedAt.jwtDate(), nil }

// GetNotBefore implements jwt.Claims; tokens carry no nbf.
func (c *RefreshClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }

// GetIssuer implements jwt.Claims.
func (c *RefreshClaims) GetIssuer() (string, error) { return c.Issuer, nil }

// GetSubject implements jwt.Claims.
func (c *RefreshClaims) GetSubject() (string, error) { return c.Subject, nil }

// GetAudience implements jwt.Claims.
func (c *RefreshClaims) GetAudience() (jwt.ClaimStrings, error) { return c.Audience, nil }

var (
	_ jwt.Claims = (*AccessClaims)(nil)
	_ jwt.Claims = (*RefreshClaims)(nil)
)

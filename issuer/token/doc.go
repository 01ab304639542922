// Package token owns the two JSON Web Tokens of a TokenPolicy: it mints and verifies access tokens (the
// RFC 9068 at+jwt profile that resource servers check) and refresh tokens (rt+jwt, naming a session and
// its generation), with github.com/golang-jwt/jwt/v5 and an injected clock. It decides nothing about
// sessions, revocation or reuse; callers hold that state and ask this package only whether a token is
// genuine, current and of the right kind.
package token

// Package issuer is the HTTP service apps call: the OAuth 2.0 token endpoint (password, refresh and
// token-exchange grants), the JSON login/refresh/logout API (with a policy's browser mode: the refresh
// token in an HttpOnly cookie, CORS and CSRF checks), RFC 7009 revocation, RFC 7662 introspection,
// discovery and JWKS, health and metrics. Handlers are methods on Server; state lives behind the
// revocation.Store and the Policies it is given.
package issuer

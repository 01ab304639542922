package issuer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// Error codes. RFC 6749 section 5.2 defines the token endpoint's, and RFC 7009, RFC 7662 and RFC 8693
// reuse them; invalid_token and insufficient_scope are RFC 6750's (introspection callers), invalid_target
// RFC 8693's, and slow_down RFC 8628's (registered for the token endpoint; there is no RFC 6749 code for
// throttling). access_denied, RFC 6749's for a refused authorization request, refuses a browser request
// that fails the cross-site checks of the browser mode (403).
const (
	errInvalidRequest         = "invalid_request"
	errInvalidClient          = "invalid_client"
	errInvalidGrant           = "invalid_grant"
	errUnsupportedGrantType   = "unsupported_grant_type"
	errInvalidScope           = "invalid_scope"
	errInvalidTarget          = "invalid_target"
	errSlowDown               = "slow_down"
	errTemporarilyUnavailable = "temporarily_unavailable"
	errServerError            = "server_error"
	errInvalidToken           = "invalid_token"
	errInsufficientScope      = "insufficient_scope"
	errNotFound               = "not_found"
	errAccessDenied           = "access_denied"
)

// apiError is a refusal: the HTTP status, the error code the endpoint's RFC defines, and a description for
// the client. Descriptions never carry a token, a password or key material.
type apiError struct {
	status       int
	code         string
	description  string
	retryAfter   time.Duration // set: a Retry-After header (429, 503)
	authenticate string        // set: a WWW-Authenticate header (401, 403)
}

func (e *apiError) Error() string { return e.code + ": " + e.description }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, description: fmt.Sprintf(format, args...)}
}

func badRequest(code, format string, args ...any) *apiError {
	return newError(http.StatusBadRequest, code, format, args...)
}

// unavailable is the fail-closed answer when state cannot be read or written: nothing was decided and the
// client may retry.
func unavailable(format string, args ...any) *apiError {
	e := newError(http.StatusServiceUnavailable, errTemporarilyUnavailable, format, args...)
	e.retryAfter = time.Second
	return e
}

// storeError maps an error of a revocation.Store: the session's own refusals are invalid_grant; anything
// else (ErrUnavailable, ErrShardFull, a cancelled request) decided nothing and is 503.
func storeError(err error) *apiError {
	switch {
	case errors.Is(err, revocation.ErrReuse):
		return badRequest(errInvalidGrant, "the refresh token was already used; its session is revoked")
	case errors.Is(err, revocation.ErrRevoked):
		return badRequest(errInvalidGrant, "the session is revoked")
	case errors.Is(err, revocation.ErrExpired):
		return badRequest(errInvalidGrant, "the session has expired")
	case errors.Is(err, revocation.ErrUnknownSession):
		return badRequest(errInvalidGrant, "the refresh token is not current")
	case errors.Is(err, revocation.ErrShardFull):
		// Not transient like the others: it lasts until an operator raises the shard count.
		return unavailable("the session cannot be recorded: its revocation shard is full; retry later")
	}
	return unavailable("session state is unavailable; retry later")
}

// bodyError maps an error reading a request body: too large is 413, anything else malformed.
func bodyError(err error) *apiError {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return newError(http.StatusRequestEntityTooLarge, errInvalidRequest, "the request body is too large")
	}
	return badRequest(errInvalidRequest, "the request is malformed")
}

// errorBody is the JSON of every error: RFC 6749 section 5.2, which the other RFCs reuse.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// writeError is the one place an error response is written.
func writeError(w http.ResponseWriter, e *apiError) {
	h := w.Header()
	noStore(h) // RFC 6749 section 5.2: error responses of the token endpoint are not cached either
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.retryAfter.Seconds()))))
	}
	if e.authenticate != "" {
		h.Set("WWW-Authenticate", e.authenticate)
	}
	if rec, ok := w.(*recorder); ok {
		rec.outcome = e.code
	}
	writeJSON(w, e.status, errorBody{Error: e.code, Description: e.description})
}

// writeJSON writes v as the JSON body of a response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // every body is a struct of strings and numbers
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// noStore marks a response that must not be cached (RFC 6749 section 5.1).
func noStore(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}

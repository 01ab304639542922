package issuer

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// Refresh outcomes, the values of tokenwarden_issuer_refreshes_total's outcome label.
const (
	refreshOK          = "ok"          // a new generation was committed
	refreshGrace       = "grace"       // a duplicate inside the grace period got the same successor
	refreshReuse       = "reuse"       // an old generation outside the grace period: the session is revoked
	refreshExpired     = "expired"     // the session passed its absolute expiry or idle timeout
	refreshRevoked     = "revoked"     // the session or its subject was revoked
	refreshUnknown     = "unknown"     // the store knows no such generation
	refreshInvalid     = "invalid"     // the token itself was refused; the store was not asked
	refreshUnavailable = "unavailable" // the store could not decide; 503
	refreshEnded       = "ended"       // the credential the session was opened for no longer holds
)

// metrics are the issuer's Prometheus metrics. Labels have fixed, small value sets (endpoints, error
// codes, outcomes) except the policy of reuse detections, bounded by the number of TokenPolicies.
type metrics struct {
	requests  *prometheus.CounterVec   // endpoint, outcome
	duration  *prometheus.HistogramVec // endpoint
	refreshes *prometheus.CounterVec   // outcome
	reuse     *prometheus.CounterVec   // namespace, policy
	logins    *prometheus.CounterVec   // grant, outcome
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwarden_issuer_requests_total",
			Help: "HTTP requests by endpoint and outcome: ok, or the error code of the answer."}, []string{"endpoint", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tokenwarden_issuer_request_duration_seconds",
			Help: "Time to answer an HTTP request, by endpoint.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"endpoint"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwarden_issuer_refreshes_total",
			Help: "Refresh-token redemptions by outcome: ok, grace, reuse, expired, revoked, unknown, invalid, unavailable."}, []string{"outcome"}),
		reuse: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwarden_issuer_refresh_token_reuse_total",
			Help: "Refresh tokens presented again after rotation, each of which revoked its session."}, []string{"namespace", "policy"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwarden_issuer_logins_total",
			Help: "Logins (password and token-exchange grants) by outcome: ok, invalid (refused credentials or request), throttled, unavailable, error."}, []string{"grant", "outcome"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.refreshes, m.reuse, m.logins} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register issuer metrics: %w", err)
		}
	}
	// Outcomes that alerts watch exist from the start, so that rate() sees their first increment.
	for _, o := range []string{refreshOK, refreshGrace, refreshReuse, refreshExpired, refreshRevoked, refreshUnknown, refreshInvalid, refreshUnavailable, refreshEnded} {
		m.refreshes.WithLabelValues(o)
	}
	return m, nil
}

// refreshOutcome is the outcome label of a refresh that the store answered with res and err.
func refreshOutcome(res revocation.RefreshResult, err error) string {
	switch {
	case err == nil && res.Duplicate:
		return refreshGrace
	case err == nil:
		return refreshOK
	case errors.Is(err, revocation.ErrReuse):
		return refreshReuse
	case errors.Is(err, revocation.ErrExpired):
		return refreshExpired
	case errors.Is(err, revocation.ErrRevoked):
		return refreshRevoked
	case errors.Is(err, revocation.ErrUnknownSession):
		return refreshUnknown
	}
	return refreshUnavailable
}

// loginOutcome is the outcome label of a login that ended with e (nil: tokens were issued).
func loginOutcome(e *apiError) string {
	switch {
	case e == nil:
		return "ok"
	case e.code == errSlowDown:
		return "throttled"
	case e.status == http.StatusServiceUnavailable:
		return "unavailable"
	case e.status >= 500:
		return "error"
	}
	return "invalid"
}

// recorder captures what a handler answered, for the request metrics. writeError sets outcome.
type recorder struct {
	http.ResponseWriter
	status  int
	outcome string
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// result is the outcome label of the request.
func (r *recorder) result() string {
	switch {
	case r.outcome != "":
		return r.outcome
	case r.status >= 400:
		return strconv.Itoa(r.status)
	}
	return "ok"
}

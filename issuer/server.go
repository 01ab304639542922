package issuer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// DefaultMaxBodyBytes bounds request bodies: a form or JSON body with a token or two fits many times over.
const DefaultMaxBodyBytes = 64 << 10

// ServerConfig is what a Server is built from. Policies, Store and Authenticator are required.
type ServerConfig struct {
	// ExternalURL is the URL clients reach the issuer at; policy namespace/name is served at
	// ExternalURL/namespace/name (Policy.Issuer). Its path, if any, prefixes every policy route, so the
	// issuer can sit behind a proxy that does not strip it. Health checks are served at the root.
	ExternalURL string
	// Policies finds the policy a request names.
	Policies Policies
	// Store holds session and revocation state.
	Store revocation.Store
	// Authenticator checks ServiceAccount tokens (token exchange, introspection callers).
	Authenticator Authenticator
	// Clock is the time tokens are issued at and sessions judged at; nil means the real clock. It should
	// be the clock the policies' codecs verify with.
	Clock clock.PassiveClock
	// Events records refresh-token reuse on the TokenPolicy; nil records none.
	Events events.EventRecorder
	// Logger logs what happened to requests; never a token, a password or key material.
	Logger logr.Logger
	// Registry receives the server's metrics and is what MetricsHandler serves; nil means a new one. Register
	// the store's and the Go runtime's collectors in it to serve them too.
	Registry *prometheus.Registry
	// MaxBodyBytes bounds request bodies; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// IPRate limits the failed attempts per client address: wrong passwords, and ServiceAccount tokens
	// refused for token exchange or as introspection callers (each of which cost a TokenReview).
	// UsernameRate limits the wrong passwords per username of a users Secret, whichever policies read it.
	// Successful attempts cost nothing. Zero means DefaultIPRate and DefaultUsernameRate.
	IPRate, UsernameRate RateLimit
	// ThrottleKeys bounds how many client addresses, and how many usernames, are tracked at once; 0 means
	// DefaultThrottleKeys.
	ThrottleKeys int
	// TrustedProxies are the peers whose X-Forwarded-For is believed: a request from one is throttled by
	// the rightmost address of that header that is not itself a trusted proxy. Empty: every request is
	// throttled by its connection's peer.
	TrustedProxies Prefixes
	// InsecureCookies honours spec.browser.cookie.secure: false, for the dev mode only: the refresh
	// cookie of such a policy (whose allowed origins are all loopback http) is then sent without Secure.
	// Otherwise every refresh cookie is Secure.
	InsecureCookies bool
}

// Server serves the token endpoint, the JSON login API, revocation, introspection and discovery of every
// policy that Policies knows. It is safe for concurrent use.
type Server struct {
	policies Policies
	store    revocation.Store
	auth     Authenticator
	clock    clock.PassiveClock
	events   events.EventRecorder
	log      logr.Logger
	registry *prometheus.Registry
	metrics  *metrics
	prefix   string // the path of ExternalURL, without a trailing slash
	maxBody  int64
	byIP     *throttle // failed credentials per client address
	byUser   *throttle // wrong passwords per users Secret and username
	proxies  Prefixes
	handler  http.Handler

	insecureCookies bool
	secureForced    sync.Map // policyGeneration -> struct{}: told that secure: false is not honoured
}

// NewServer checks cfg, registers the metrics and builds the routes.
func NewServer(cfg ServerConfig) (*Server, error) {
	u, err := url.Parse(cfg.ExternalURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("external URL %q is not an absolute http(s) URL without query or fragment", cfg.ExternalURL)
	}
	switch {
	case cfg.Policies == nil:
		return nil, errors.New("no policies")
	case cfg.Store == nil:
		return nil, errors.New("no revocation store")
	case cfg.Authenticator == nil:
		return nil, errors.New("no authenticator")
	case cfg.MaxBodyBytes < 0:
		return nil, fmt.Errorf("negative body limit %d", cfg.MaxBodyBytes)
	}
	s := &Server{
		policies: cfg.Policies, store: cfg.Store, auth: cfg.Authenticator, clock: cfg.Clock, events: cfg.Events,
		log: cfg.Logger, registry: cfg.Registry, prefix: strings.TrimRight(u.EscapedPath(), "/"),
		maxBody: cfg.MaxBodyBytes, proxies: cfg.TrustedProxies, insecureCookies: cfg.InsecureCookies,
	}
	if s.clock == nil {
		s.clock = clock.RealClock{}
	}
	if s.registry == nil {
		s.registry = prometheus.NewRegistry()
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	ipRate, userRate, maxKeys := cfg.IPRate, cfg.UsernameRate, cfg.ThrottleKeys
	if ipRate == (RateLimit{}) {
		ipRate = DefaultIPRate
	}
	if userRate == (RateLimit{}) {
		userRate = DefaultUsernameRate
	}
	if maxKeys == 0 {
		maxKeys = DefaultThrottleKeys
	}
	for _, l := range []RateLimit{ipRate, userRate} {
		if l.PerSecond <= 0 || l.Burst < 1 {
			return nil, fmt.Errorf("rate limit %+v: want a positive rate and a burst of at least 1", l)
		}
	}
	s.byIP, s.byUser = newThrottle(ipRate, maxKeys), newThrottle(userRate, maxKeys)
	if s.metrics, err = newMetrics(s.registry); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's routes.
func (s *Server) Handler() http.Handler { return s.handler }

// NewHTTPServer returns an http.Server for h at addr whose timeouts bound what a slow or idle client can
// hold. The write timeout leaves room for a revocation-store commit and a TokenReview.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10, // a ServiceAccount token as Bearer credentials, and room to spare
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	p := s.prefix + "/{namespace}/{policy}"
	s.handle(mux, "POST "+p+"/token", "token", s.serveToken)
	s.handle(mux, "POST "+p+"/login", "login", s.serveLogin)
	s.handle(mux, "POST "+p+"/refresh", "refresh", s.serveRefresh)
	s.handle(mux, "POST "+p+"/logout", "logout", s.serveLogout)
	for _, endpoint := range []string{"login", "refresh", "logout"} {
		s.handle(mux, "OPTIONS "+p+"/"+endpoint, "preflight", s.servePreflight)
	}
	s.handle(mux, "POST "+p+"/revoke", "revoke", s.serveRevoke)
	s.handle(mux, "POST "+p+"/introspect", "introspect", s.serveIntrospect)
	s.handle(mux, "GET "+p+"/.well-known/openid-configuration", "discovery", s.serveDiscovery)
	s.handle(mux, "GET "+p+"/.well-known/oauth-authorization-server", "discovery", s.serveDiscovery)
	s.handle(mux, "GET "+p+"/jwks.json", "jwks", s.serveJWKS)
	s.handle(mux, "GET /healthz", "healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	s.handle(mux, "GET /readyz", "readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.policies.Ready() {
			writeError(w, unavailable("the policies are not loaded yet"))
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// MetricsHandler serves the server's metrics (its Registry) in the Prometheus text format. It is not among
// Handler's routes: the endpoints face every app, and per-policy outcome counts are for operators.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})
}

// handle registers h for pattern, limiting its body and counting its outcome and duration as endpoint.
func (s *Server) handle(mux *http.ServeMux, pattern, endpoint string, h http.HandlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now() // for the duration histogram only; nothing is decided by it
		// The limit goes on the connection's own writer, which closes the connection after an oversize body.
		r.Body = http.MaxBytesReader(w, r.Body, s.maxBody)
		rec := &recorder{ResponseWriter: w}
		h(rec, r)
		s.metrics.requests.WithLabelValues(endpoint, rec.result()).Inc()
		s.metrics.duration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
	})
}

// policy is the policy the request's path names.
func (s *Server) policy(r *http.Request) (*Policy, *apiError) {
	ns, name := r.PathValue("namespace"), r.PathValue("policy")
	p, ok := s.policies.Get(ns, name)
	if !ok {
		return nil, newError(http.StatusNotFound, errNotFound, "no token policy %s/%s is served here: it does not exist, or it is not Ready (kubectl describe tokenpolicy says why)", ns, name)
	}
	return p, nil
}

// logger is the request's logger for policy p.
func (s *Server) logger(p *Policy) logr.Logger {
	return s.log.WithValues("policy", p.Key.String())
}

// Form parameters that may appear more than once (RFC 8693 section 2.1); every other parameter must not
// (RFC 6749 section 3.2).
var repeatable = map[string]bool{"audience": true, "resource": true}

// readForm parses an application/x-www-form-urlencoded body. Only the body counts: parameters in the URL
// are ignored, so that credentials there (which end up in logs) are never honoured.
func readForm(r *http.Request) (url.Values, *apiError) {
	if !hasMediaType(r, "application/x-www-form-urlencoded") {
		return nil, badRequest(errInvalidRequest, "the request body must be application/x-www-form-urlencoded")
	}
	if err := r.ParseForm(); err != nil {
		return nil, bodyError(err)
	}
	for k, v := range r.PostForm {
		if len(v) > 1 && !repeatable[k] {
			return nil, badRequest(errInvalidRequest, "parameter %q appears more than once", k)
		}
	}
	return r.PostForm, nil
}

// readJSON decodes an application/json body holding exactly one JSON value into v. Unknown members are
// ignored: clients written for other servers send extra ones.
func readJSON(r *http.Request, v any) *apiError {
	if !hasMediaType(r, "application/json") {
		// 415 rather than 400: the JSON API is not OAuth, and HTTP has a status for exactly this.
		return newError(http.StatusUnsupportedMediaType, errInvalidRequest, "the request body must be application/json")
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			return bodyError(err)
		}
		return badRequest(errInvalidRequest, "the request body holds more than one JSON value")
	}
	return nil
}

// hasMediaType reports whether the request's Content-Type is want, parameters such as charset aside.
func hasMediaType(r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == want
}

package reliability

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-logr/logr"
	"golang.org/x/crypto/bcrypt"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/controllers"
	"github.com/tokenwarden/tokenwarden/internal/login"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
	"github.com/tokenwarden/tokenwarden/issuer"
	"github.com/tokenwarden/tokenwarden/issuer/app"
	"github.com/tokenwarden/tokenwarden/issuer/app/apptest"
)

var (
	env       *testenv.Env
	clientset *kubernetes.Clientset
)

// externalURL is the one URL every replica of the issuer is reached at, as behind a Service.
const externalURL = "http://issuer.test"

// labelManual marks a policy the package's controller leaves alone: its test reconciles it itself, with a
// clock or a shard budget of its own.
const labelManual = "reliability.tokenwarden.io/manual"

func TestMain(m *testing.M) {
	// klog (client-go's logs) goes to klogTarget, which a test may point elsewhere while goroutines log:
	// klog.SetLogger itself may only be called before any of them starts.
	discard := logr.Discard()
	klogTarget.Store(&discard)
	klog.SetLogger(logr.New(&switchSink{}))
	// Restartable: etcd keeps its data and the API server its port and certificates when a test stops
	// and starts them.
	testenv.MainWith(m, &env, testenv.Options{Restartable: true}, startController)
}

// startController runs the TokenPolicy and TokenRevocation reconcilers, on the real clock, for every
// policy not labelled manual.
func startController(e *testenv.Env) error {
	var err error
	if clientset, err = kubernetes.NewForConfig(e.Config); err != nil {
		return err
	}
	opts := controllers.CacheOptions()
	notManual, err := labels.NewRequirement(labelManual, selection.DoesNotExist, nil)
	if err != nil {
		return err
	}
	opts.ByObject[&v1alpha1.TokenPolicy{}] = cache.ByObject{Label: labels.NewSelector().Add(*notManual)}
	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{Scheme: e.Scheme, Cache: opts, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		return err
	}
	if err := e.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: issuerNS}}); err != nil {
		return err
	}
	if err := controllers.Setup(mgr, controllers.Options{IssuerURL: externalURL, IssuerNamespace: issuerNS, IssuerPeerSecret: peerSecret}); err != nil {
		return err
	}
	go func() { _ = mgr.Start(context.Background()) }() // stops with the process
	return nil
}

// peerSecret is the replicas' peer key Secret, which the controller keeps, as the chart names it.
const peerSecret = "tokenwarden-issuer-peer"

// leaseDuration is the replicas' journal Lease duration: short, so that a dead owner's journal changes
// hands within a test's patience.
const leaseDuration = 2 * time.Second

// issuerNS is the issuers' namespace, as the chart's release namespace.
const issuerNS = "tokenwarden-system"

// manualReconciler reconciles manual policies when a test calls it, with the test's clock and budget.
func manualReconciler(clk clock.PassiveClock, budget int) *controllers.TokenPolicyReconciler {
	return &controllers.TokenPolicyReconciler{Client: env.Client, APIReader: env.Client, Scheme: env.Scheme, Clock: clk,
		IssuerURL: externalURL, IssuerNamespace: issuerNS, Revocations: &configmap.Keeper{Client: env.Client, Reader: env.Client, Budget: budget}}
}

// replicaOptions configure one in-process issuer replica.
type replicaOptions struct {
	clock        clock.PassiveClock // nil: the fixture's clock
	shardBudget  int
	writeTimeout time.Duration
	logger       *logr.Logger
	// defaultLimits keeps the server's default limits on failed attempts; otherwise they are out of the way.
	defaultLimits bool
	// trustedProxies are the replica's (--trusted-proxies); loopback lets one test process be many clients,
	// each naming itself in X-Forwarded-For.
	trustedProxies issuer.Prefixes
}

// loopback is the test client's address range, as a trusted proxy.
var loopback = issuer.Prefixes{netip.MustParsePrefix("127.0.0.0/8")}

// replica is one running issuer.
type replica struct {
	base    string // http://127.0.0.1:port, its endpoints
	metrics string // http://127.0.0.1:port, its /metrics
	peer    string // 127.0.0.1:port, its peer port
	stop    func()
}

// startReplica starts an issuer replica serving externalURL with app.Run, as the binary does.
func startReplica(t testing.TB, o replicaOptions) *replica {
	t.Helper()
	logger := logr.Discard()
	if o.logger != nil {
		logger = *o.logger
	}
	r := apptest.Start(t, env.Config, app.Options{ExternalURL: externalURL, Namespace: issuerNS, Clock: o.clock, Logger: logger,
		ShardBudget: o.shardBudget, WriteTimeout: o.writeTimeout, TrustedProxies: o.trustedProxies,
		Peers: &app.Peers{KeySecret: peerSecret, LeaseDuration: leaseDuration},
		ServerOptions: func(c *issuer.ServerConfig) {
			if o.defaultLimits {
				return
			}
			c.IPRate = issuer.RateLimit{PerSecond: 100000, Burst: 100000} // the tests log in fast from one address
			c.UsernameRate = issuer.RateLimit{PerSecond: 100000, Burst: 100000}
		}})
	return &replica{base: r.Base, metrics: r.Metrics, peer: r.Peer, stop: r.Stop}
}

// fixture is a namespace with a policy, users, ServiceAccounts and replicas.
type fixture struct {
	t      testing.TB
	ns     string
	policy string
	clock  *clocktesting.FakeClock
	// manual is the reconciler of a manual policy (nil: the package's controller reconciles it).
	manual *controllers.TokenPolicyReconciler

	mu       sync.Mutex
	replicas []*replica
	bearer   string // the introspector's ServiceAccount token
}

type fixtureOptions struct {
	replicas int
	spec     func(*v1alpha1.TokenPolicySpec)
	replica  replicaOptions
	// manual: the test reconciles the policy with this clock and shard budget (budget 0: the default).
	manual      bool
	manualClock *clocktesting.FakeClock
	budget      int
}

const password = "wonderland"

// passwordHash is password's bcrypt hash at the lowest cost a users Secret may hold.
var passwordHash = sync.OnceValues(func() ([]byte, error) { return bcrypt.GenerateFromPassword([]byte(password), login.MinCost) })

// newFixture creates the policy (grace period 60s unless spec says otherwise, so that a client retrying a
// lost answer gets the same successor) and starts the replicas, which share a fake clock.
func newFixture(t testing.TB, o fixtureOptions) *fixture {
	t.Helper()
	f := &fixture{t: t, ns: env.Namespace(t), policy: "payments", clock: clocktesting.NewFakeClock(time.Now().Truncate(time.Second))}
	if o.manualClock != nil {
		f.clock = o.manualClock
	}
	ctx := context.Background()
	hash, err := passwordHash()
	must(t, err)
	users := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "users", Annotations: map[string]string{v1alpha1.AnnotationAllowedPolicies: f.policy}},
		Data: map[string][]byte{"alice": hash, "bob": hash, "carol": hash}}
	must(t, env.Client.Create(ctx, users))
	for _, sa := range []string{"introspector", "app"} {
		must(t, env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: sa}}))
	}
	p := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: f.policy}, Spec: v1alpha1.TokenPolicySpec{
		Audiences:     []string{"payments-api"},
		RefreshToken:  v1alpha1.RefreshTokenSpec{ReuseGracePeriod: metav1.Duration{Duration: time.Minute}},
		Login:         v1alpha1.LoginSpec{PasswordSecretName: "users", ServiceAccounts: []v1alpha1.ServiceAccountRef{{Namespace: f.ns, Name: "app"}}},
		Introspection: v1alpha1.IntrospectionSpec{ServiceAccounts: []v1alpha1.ServiceAccountRef{{Namespace: f.ns, Name: "introspector"}}},
		Revocation:    v1alpha1.RevocationSpec{Shards: 2},
	}}
	if o.spec != nil {
		o.spec(&p.Spec)
	}
	if o.manual {
		p.Labels = map[string]string{labelManual: "true"}
		f.manual = manualReconciler(f.clock, o.budget)
	}
	must(t, env.Client.Create(ctx, p))
	if f.manual != nil {
		f.reconcile()
	}
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return false, err.Error()
		}
		return meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady), "policy not Ready"
	})
	ro := o.replica
	if ro.clock == nil {
		ro.clock = f.clock
	}
	for range o.replicas {
		f.addReplica(ro)
	}
	f.bearer = f.saToken("introspector")
	return f
}

// reconcile runs one pass of the manual reconciler.
func (f *fixture) reconcile() {
	f.t.Helper()
	if _, err := f.manual.Reconcile(context.Background(), ctrl.Request{NamespacedName: f.key()}); err != nil {
		f.t.Fatalf("reconcile %s: %v", f.key(), err)
	}
}

func (f *fixture) key() client.ObjectKey { return client.ObjectKey{Namespace: f.ns, Name: f.policy} }

// getPolicy reads the policy as the API server holds it.
func (f *fixture) getPolicy() *v1alpha1.TokenPolicy {
	f.t.Helper()
	p := &v1alpha1.TokenPolicy{}
	must(f.t, env.Client.Get(context.Background(), f.key(), p))
	return p
}

// addReplica starts one more replica and waits until it serves the policy.
func (f *fixture) addReplica(o replicaOptions) *replica {
	f.t.Helper()
	if o.clock == nil {
		o.clock = f.clock
	}
	r := startReplica(f.t, o)
	f.waitServed(r.base)
	f.mu.Lock()
	f.replicas = append(f.replicas, r)
	f.mu.Unlock()
	return r
}

// replica returns replica i modulo their number.
func (f *fixture) replica(i int) *replica {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replicas[((i%len(f.replicas))+len(f.replicas))%len(f.replicas)]
}

func (f *fixture) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.replicas)
}

// replace swaps replica i for r.
func (f *fixture) replace(i int, r *replica) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replicas[i] = r
}

func (f *fixture) path() string { return "/" + f.ns + "/" + f.policy }

// issuerURL is the iss of the policy's tokens.
func (f *fixture) issuerURL() string { return externalURL + f.path() }

// url is endpoint of the policy on replica i.
func (f *fixture) url(i int, endpoint string) string {
	return f.replica(i).base + f.path() + "/" + endpoint
}

// waitServed waits until the replica at base serves the policy (its informers have seen it and its keys).
func (f *fixture) waitServed(base string) {
	f.t.Helper()
	testenv.Eventually(f.t, 30*time.Second, func() (bool, string) {
		r, err := get(base + f.path() + "/jwks.json")
		if err != nil {
			return false, err.Error()
		}
		return r.status == http.StatusOK, fmt.Sprintf("jwks status %d", r.status)
	})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// httpClient talks to the replicas. Its timeout is longer than any the issuer applies to a request.
var httpClient = &http.Client{Timeout: 45 * time.Second, Transport: &http.Transport{
	Proxy: nil, MaxIdleConns: 256, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}

// response is an HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (r response) str(k string) string { s, _ := r.json[k].(string); return s }

func (r response) String() string { return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body)) }

// errorIs reports whether r is an error answer with status and error code.
func (r response) errorIs(status int, code string) bool {
	return r.status == status && r.str("error") == code
}

func do(method, u, contentType string, body []byte, header http.Header) (response, error) {
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	out := response{status: resp.StatusCode, header: resp.Header, body: b, json: map[string]any{}}
	_ = json.Unmarshal(b, &out.json)
	return out, nil
}

func get(u string) (response, error) { return do(http.MethodGet, u, "", nil, nil) }

func postForm(u string, form url.Values, header http.Header) (response, error) {
	return do(http.MethodPost, u, "application/x-www-form-urlencoded", []byte(form.Encode()), header)
}

func postJSON(u string, v any) (response, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return response{}, err
	}
	return do(http.MethodPost, u, "application/json", b, nil)
}

// Operations on replica i. They return the transport error instead of failing, for the load generators.

func (f *fixture) tryLogin(i int, user string) (response, error) {
	return postForm(f.url(i, "token"), url.Values{"grant_type": {"password"}, "username": {user}, "password": {password}}, nil)
}

func (f *fixture) tryRefresh(i int, rt string) (response, error) {
	return postForm(f.url(i, "token"), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, nil)
}

func (f *fixture) tryLogout(i int, rt string) (response, error) {
	return postJSON(f.url(i, "logout"), map[string]string{"refresh_token": rt})
}

func (f *fixture) tryRevoke(i int, tok, hint string) (response, error) {
	return postForm(f.url(i, "revoke"), url.Values{"token": {tok}, "token_type_hint": {hint}}, nil)
}

func (f *fixture) tryIntrospect(i int, tok string) (response, error) {
	return postForm(f.url(i, "introspect"), url.Values{"token": {tok}}, http.Header{"Authorization": {"Bearer " + f.bearer}})
}

// login logs user in on replica i and fails the test unless it succeeds.
func (f *fixture) login(i int, user string) response {
	f.t.Helper()
	r, err := f.tryLogin(i, user)
	if err != nil || r.status != http.StatusOK {
		f.t.Fatalf("login of %s on replica %d: %v %v", user, i, r, err)
	}
	return r
}

// refresh refreshes on replica i and fails the test on a transport error.
func (f *fixture) refresh(i int, rt string) response {
	f.t.Helper()
	r, err := f.tryRefresh(i, rt)
	if err != nil {
		f.t.Fatalf("refresh on replica %d: %v", i, err)
	}
	return r
}

// saToken is a token of ServiceAccount name for the policy's issuer URL, from the TokenRequest API.
func (f *fixture) saToken(name string) string {
	f.t.Helper()
	tr, err := clientset.CoreV1().ServiceAccounts(f.ns).CreateToken(context.Background(), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{f.issuerURL()}}}, metav1.CreateOptions{})
	must(f.t, err)
	return tr.Status.Token
}

// eventuallyInactive waits until every replica reports tok inactive.
func (f *fixture) eventuallyInactive(tok string) {
	f.t.Helper()
	for i := range f.count() {
		testenv.Eventually(f.t, 30*time.Second, func() (bool, string) {
			r, err := f.tryIntrospect(i, tok)
			if err != nil {
				return false, err.Error()
			}
			return r.status == http.StatusOK && r.json["active"] == false, fmt.Sprintf("replica %d: %v", i, r)
		})
	}
}

// claims decodes a JWT's payload without verifying it (the tests know where their tokens come from).
func claims(tok string) map[string]any {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

func sid(tok string) string { s, _ := claims(tok)["sid"].(string); return s }

// kid is the key id in a JWT's header.
func kid(tok string) string {
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		return ""
	}
	var m map[string]any
	_ = json.Unmarshal(h, &m)
	s, _ := m["kid"].(string)
	return s
}

// jwks is a JWKS as a resource server fetched it, frozen: it never refetches.
type jwks struct {
	kids []string
	set  jose.JSONWebKeySet
}

// fetchJWKS fetches the policy's JWKS from replica i, as a resource server would.
func (f *fixture) fetchJWKS(i int) jwks {
	f.t.Helper()
	r, err := get(f.url(i, "jwks.json"))
	if err != nil || r.status != http.StatusOK {
		f.t.Fatalf("GET jwks.json from replica %d: %v %v", i, r, err)
	}
	var k jwks
	must(f.t, json.Unmarshal(r.body, &k.set))
	for _, key := range k.set.Keys {
		k.kids = append(k.kids, key.KeyID)
	}
	return k
}

func (k jwks) has(kid string) bool {
	for _, x := range k.kids {
		if x == kid {
			return true
		}
	}
	return false
}

// verify checks a token offline with go-oidc against the frozen key set, at now: an access token as a
// resource server of audience payments-api would, a refresh token (whose audience is the issuer) for its
// signature, issuer and expiry only.
func (f *fixture) verify(k jwks, tok string, now time.Time) error {
	var pubs []crypto.PublicKey
	for _, key := range k.set.Keys {
		pubs = append(pubs, key.Key)
	}
	_, refresh := claims(tok)["gen"]
	v := oidc.NewVerifier(f.issuerURL(), &oidc.StaticKeySet{PublicKeys: pubs}, &oidc.Config{ClientID: "payments-api",
		SkipClientIDCheck: refresh, SupportedSigningAlgs: []string{oidc.EdDSA}, Now: func() time.Time { return now }})
	_, err := v.Verify(context.Background(), tok)
	return err
}

// metric reads the value of an unlabelled counter or gauge from a replica's /metrics (0 when absent).
func metric(base, name string) (float64, error) {
	r, err := get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	if r.status != http.StatusOK {
		return 0, fmt.Errorf("GET %s/metrics: %d", base, r.status)
	}
	for _, line := range strings.Split(string(r.body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}

// sumMetric adds a metric over every replica.
func (f *fixture) sumMetric(name string) float64 {
	var sum float64
	for i := range f.count() {
		v, err := metric(f.replica(i).metrics, name)
		if err != nil {
			f.t.Fatalf("replica %d: %v", i, err)
		}
		sum += v
	}
	return sum
}

// klogTarget is where klog's output goes; logr.Discard() unless a test says otherwise.
var klogTarget atomic.Pointer[logr.Logger]

// switchSink is a logr.LogSink that forwards to whatever klogTarget holds when an entry is logged.
type switchSink struct {
	names  []string
	values []any
}

func (s *switchSink) target() logr.LogSink {
	l := *klogTarget.Load()
	for _, n := range s.names {
		l = l.WithName(n)
	}
	if len(s.values) > 0 {
		l = l.WithValues(s.values...)
	}
	if l.GetSink() == nil {
		return logr.Discard().GetSink()
	}
	return l.GetSink()
}

func (s *switchSink) Init(logr.RuntimeInfo) {}

func (s *switchSink) Enabled(level int) bool {
	sink := s.target()
	return sink != nil && sink.Enabled(level)
}

func (s *switchSink) Info(level int, msg string, kv ...any) {
	if sink := s.target(); sink != nil {
		sink.Info(level, msg, kv...)
	}
}

func (s *switchSink) Error(err error, msg string, kv ...any) {
	if sink := s.target(); sink != nil {
		sink.Error(err, msg, kv...)
	}
}

func (s *switchSink) WithValues(kv ...any) logr.LogSink {
	return &switchSink{names: s.names, values: append(append([]any(nil), s.values...), kv...)}
}

func (s *switchSink) WithName(name string) logr.LogSink {
	return &switchSink{names: append(append([]string(nil), s.names...), name), values: s.values}
}

package issuer_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/internal/login"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/issuer"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

const (
	audience       = "https://api.example.com"
	accessLifetime = 15 * time.Minute
	sessionLife    = 24 * time.Hour
)

// t0 is when every fixture's clock starts.
var t0 = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// testKeys holds one generated key per algorithm, shared by the tests (RSA keys take a while), and a
// second EdDSA key for the other policy.
var testKeys = sync.OnceValue(func() map[string]*keys.Key {
	m := map[string]*keys.Key{}
	for _, name := range []string{"EdDSA", "ES256", "RS256", "HS256", "other"} {
		alg := v1alpha1.SigningAlgorithm(name)
		if name == "other" {
			alg = v1alpha1.EdDSA
		}
		k, err := keys.Generate(alg)
		if err != nil {
			panic(err)
		}
		m[name] = k
	}
	return m
})

// users are the password users of the main policy, hashed with bcrypt at its lowest cost.
var users = sync.OnceValue(func() bcryptUsers {
	u := bcryptUsers{}
	for name, pw := range map[string]string{"alice": "wonderland", "bob": "builder", "": "decoy"} {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), 4)
		if err != nil {
			panic(err)
		}
		u[name] = h
	}
	return u
})

// bcryptUsers is a PasswordChecker over bcrypt hashes; an unknown user costs a comparison with the decoy
// under "".
type bcryptUsers map[string][]byte

func (u bcryptUsers) Fingerprint(username string) (string, bool) {
	hash, ok := u[username]
	if !ok || username == "" {
		return "", false
	}
	return login.Fingerprint(hash), true
}

func (u bcryptUsers) Check(username, password string) bool {
	hash, ok := u[username]
	if !ok || username == "" {
		hash, ok = u[""], false
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil && ok
}

// subjects are the ServiceAccounts and Pods the fixture's policy may still be bound to: every
// ServiceAccount exists, with the UID fakeAuth reviews it with, unless a test deletes it or gives it a new
// UID; no Pod is known unless a test adds it.
type subjects struct {
	mu   sync.Mutex
	uids map[string]string // namespace/name -> UID, overriding the default
	pods map[string]bool
}

func (s *subjects) ServiceAccountUID(ns, name string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if uid, ok := s.uids[ns+"/"+name]; ok {
		return uid, uid != ""
	}
	return "uid-" + ns + "-" + name, true
}

func (s *subjects) PodExists(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pods[uid]
}

// setUID makes ServiceAccount ns/name have uid; "" deletes it.
func (s *subjects) setUID(ns, name, uid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uids[ns+"/"+name] = uid
}

// fakeAuth accepts ServiceAccount tokens of the form sa|<namespace>|<name>|<audience> (see saToken), and
// reports the review as unavailable for reviewDown.
type fakeAuth struct{}

const reviewDown = "review-unavailable"

func saToken(ns, name, aud string) string { return "sa|" + ns + "|" + name + "|" + aud }

// podToken is a ServiceAccount token bound to the Pod whose UID is pod.
func podToken(ns, name, aud, pod string) string { return saToken(ns, name, aud) + "|" + pod }

func (fakeAuth) Authenticate(_ context.Context, tok, aud string) (issuer.ServiceAccount, error) {
	if tok == reviewDown {
		return issuer.ServiceAccount{}, fmt.Errorf("%w: connection refused", issuer.ErrAuthenticatorUnavailable)
	}
	parts := strings.Split(tok, "|")
	if len(parts) < 4 || len(parts) > 5 || parts[0] != "sa" || parts[3] != aud {
		return issuer.ServiceAccount{}, errors.New("token not authenticated")
	}
	sa := issuer.ServiceAccount{Namespace: parts[1], Name: parts[2], UID: "uid-" + parts[1] + "-" + parts[2]}
	if len(parts) == 5 {
		sa.PodName, sa.PodUID = "pod-"+parts[4], parts[4]
	}
	return sa, nil
}

// faultyStore is a Memory store whose writes, and separately whose reads, can be made to fail.
type faultyStore struct {
	*revocation.Memory
	mu      sync.Mutex
	err     error
	readErr error
}

// failReads makes Valid and Current answer err (nil: the Memory store's answers again).
func (s *faultyStore) failReads(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readErr = err
}

func (s *faultyStore) readFailure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readErr
}

func (s *faultyStore) Valid(policy types.NamespacedName, sid, subject string, authTime time.Time) error {
	if err := s.readFailure(); err != nil {
		return err
	}
	return s.Memory.Valid(policy, sid, subject, authTime)
}

func (s *faultyStore) Current(policy types.NamespacedName, sid string, gen uint64) (bool, error) {
	if err := s.readFailure(); err != nil {
		return false, err
	}
	return s.Memory.Current(policy, sid, gen)
}

func (s *faultyStore) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

func (s *faultyStore) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *faultyStore) Refresh(ctx context.Context, req revocation.RefreshRequest) (revocation.RefreshResult, error) {
	if err := s.failure(); err != nil {
		return revocation.RefreshResult{}, err
	}
	return s.Memory.Refresh(ctx, req)
}

func (s *faultyStore) RevokeSession(ctx context.Context, req revocation.RevokeSessionRequest) error {
	if err := s.failure(); err != nil {
		return err
	}
	return s.Memory.RevokeSession(ctx, req)
}

// staticPolicies serves a fixed set of policies.
type staticPolicies struct {
	mu       sync.Mutex
	policies map[types.NamespacedName]*issuer.Policy
	ready    bool
}

func (s *staticPolicies) Get(namespace, name string) (*issuer.Policy, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.policies[types.NamespacedName{Namespace: namespace, Name: name}]
	return p, ok
}

func (s *staticPolicies) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

func (s *staticPolicies) setReady(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = ready
}

// options vary a fixture.
type options struct {
	alg    v1alpha1.SigningAlgorithm // of the main policy; EdDSA when empty
	grace  time.Duration
	idle   time.Duration
	prefix string // path of the external URL
	// limits; zero means generous, so that tests that log in often are not throttled
	ipRate, userRate issuer.RateLimit
	// trustedProxies are the server's; the test client's peer is 127.0.0.1, so 127.0.0.0/8 lets a test be
	// many clients with X-Forwarded-For.
	trustedProxies issuer.Prefixes
	// auth is the server's Authenticator; nil means fakeAuth.
	auth issuer.Authenticator
	// quiet sends events nowhere: fuzzing causes more of them than a FakeRecorder's buffer holds.
	quiet bool
	// browser is the main policy's spec.browser; insecureCookies is the server's dev-mode setting.
	browser         *v1alpha1.BrowserSpec
	insecureCookies bool
	logger          logr.Logger
}

// fixture is a Server behind an httptest.Server with two policies: apps/billing (the main one: password
// users, ServiceAccounts for exchange and introspection) and apps/other (another key, no logins).
type fixture struct {
	t        testing.TB
	clock    *clocktesting.FakeClock
	store    *faultyStore
	events   *events.FakeRecorder
	registry *prometheus.Registry
	policies *staticPolicies
	server   *issuer.Server
	ts       *httptest.Server
	policy   *issuer.Policy
	other    *issuer.Policy
	subjects *subjects
}

func newFixture(t testing.TB, o options) *fixture {
	t.Helper()
	if o.alg == "" {
		o.alg = v1alpha1.EdDSA
	}
	if o.ipRate == (issuer.RateLimit{}) {
		o.ipRate = issuer.RateLimit{PerSecond: 1000, Burst: 1000}
	}
	if o.userRate == (issuer.RateLimit{}) {
		o.userRate = issuer.RateLimit{PerSecond: 1000, Burst: 1000}
	}
	f := &fixture{t: t, clock: clocktesting.NewFakeClock(t0), store: &faultyStore{Memory: revocation.NewMemory()},
		events: events.NewFakeRecorder(16), registry: prometheus.NewRegistry(),
		subjects: &subjects{uids: map[string]string{}, pods: map[string]bool{}}}
	if o.quiet {
		f.events = &events.FakeRecorder{}
	}
	// The listener exists before the server starts, so the policies can name their issuer URL.
	f.ts = httptest.NewUnstartedServer(nil)
	t.Cleanup(f.ts.Close)
	external := "http://" + f.ts.Listener.Addr().String() + o.prefix

	spec := v1alpha1.TokenPolicySpec{
		Audiences:    []string{audience},
		AccessToken:  v1alpha1.AccessTokenSpec{Lifetime: metav1.Duration{Duration: accessLifetime}},
		RefreshToken: v1alpha1.RefreshTokenSpec{Lifetime: metav1.Duration{Duration: sessionLife}, ReuseGracePeriod: metav1.Duration{Duration: o.grace}},
		Signing:      v1alpha1.SigningSpec{Algorithm: o.alg},
		Login: v1alpha1.LoginSpec{PasswordSecretName: "users", ServiceAccounts: []v1alpha1.ServiceAccountRef{
			{Namespace: "apps", Name: "worker"}, {Namespace: "batch", Name: "*"}}},
		Introspection: v1alpha1.IntrospectionSpec{ServiceAccounts: []v1alpha1.ServiceAccountRef{{Namespace: "apps", Name: "api"}}},
		Revocation:    v1alpha1.RevocationSpec{Shards: 4},
	}
	if o.idle > 0 {
		spec.RefreshToken.IdleTimeout = &metav1.Duration{Duration: o.idle}
	}
	spec.Browser = o.browser
	f.policy = f.newPolicy(external, "billing", spec, testKeys()[string(o.alg)])
	f.policy.Users, f.policy.Subjects = users(), f.subjects
	otherSpec := v1alpha1.TokenPolicySpec{Audiences: []string{audience}, Signing: v1alpha1.SigningSpec{Algorithm: v1alpha1.EdDSA},
		AccessToken:   v1alpha1.AccessTokenSpec{Lifetime: metav1.Duration{Duration: accessLifetime}},
		RefreshToken:  v1alpha1.RefreshTokenSpec{Lifetime: metav1.Duration{Duration: sessionLife}},
		Introspection: spec.Introspection}
	f.other = f.newPolicy(external, "other", otherSpec, testKeys()["other"])
	f.policies = &staticPolicies{ready: true, policies: map[types.NamespacedName]*issuer.Policy{
		f.policy.Key: f.policy, f.other.Key: f.other}}

	auth := o.auth
	if auth == nil {
		auth = fakeAuth{}
	}
	var err error
	f.server, err = issuer.NewServer(issuer.ServerConfig{
		ExternalURL: external, Policies: f.policies, Store: f.store, Authenticator: auth, Clock: f.clock,
		Events: f.events, Registry: f.registry, IPRate: o.ipRate, UsernameRate: o.userRate, TrustedProxies: o.trustedProxies,
		InsecureCookies: o.insecureCookies, Logger: o.logger,
	})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	f.ts.Config.Handler = f.server.Handler()
	f.ts.Start()
	return f
}

// addPolicy serves one more policy like the main one, apps/name, whose users are read from the users
// Secret secretName (the main policy's is "users"); the users themselves are the main policy's.
func (f *fixture) addPolicy(name, secretName string) *issuer.Policy {
	f.t.Helper()
	spec := f.policy.Object.Spec
	spec.Login.PasswordSecretName = secretName
	p := f.newPolicy(strings.TrimSuffix(f.policy.Issuer, "/"+f.policy.Key.Namespace+"/"+f.policy.Key.Name), name, spec, testKeys()["other"])
	p.Users = f.policy.Users
	f.policies.mu.Lock()
	defer f.policies.mu.Unlock()
	f.policies.policies[p.Key] = p
	return p
}

func (f *fixture) newPolicy(external, name string, spec v1alpha1.TokenPolicySpec, key *keys.Key) *issuer.Policy {
	f.t.Helper()
	set, err := keys.NewSet(key.Algorithm, "", []*keys.Key{key})
	if err != nil {
		f.t.Fatalf("key set: %v", err)
	}
	iss := external + "/apps/" + name
	codec, err := token.New(token.Policy{Issuer: iss, Audiences: spec.Audiences, AccessLifetime: spec.AccessToken.Lifetime.Duration, Keys: set}, f.clock)
	if err != nil {
		f.t.Fatalf("codec: %v", err)
	}
	obj := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: name}, Spec: spec}
	return &issuer.Policy{Key: types.NamespacedName{Namespace: "apps", Name: name}, State: types.NamespacedName{Namespace: "tokenwarden", Name: "apps." + name},
		Object: obj, Issuer: iss, Codec: codec, Keys: set}
}

// response is what the server answered.
type response struct {
	status int
	header http.Header
	body   []byte
}

// answer is a token response or an error, decoded.
type answer struct {
	AccessToken      string `json:"access_token"`
	IssuedTokenType  string `json:"issued_token_type"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	Scope            string `json:"scope"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

func (r response) answer(t testing.TB) answer {
	t.Helper()
	var a answer
	if err := json.Unmarshal(r.body, &a); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return a
}

func (r response) object(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return m
}

// do sends a request to the test server; url is absolute or a path.
func (f *fixture) do(method, target, contentType string, body io.Reader, header http.Header) response {
	f.t.Helper()
	if strings.HasPrefix(target, "/") {
		target = f.ts.URL + target
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		f.t.Fatalf("request: %v", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("read %s %s: %v", method, target, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

const formType = "application/x-www-form-urlencoded"

// postForm posts form to the endpoint of p (token, revoke, introspect...).
func (f *fixture) postForm(p *issuer.Policy, endpoint string, form url.Values, header http.Header) response {
	f.t.Helper()
	return f.do(http.MethodPost, p.Issuer+"/"+endpoint, formType, strings.NewReader(form.Encode()), header)
}

// postJSON posts v, encoded, to the JSON API endpoint of p.
func (f *fixture) postJSON(p *issuer.Policy, endpoint string, v any) response {
	f.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		f.t.Fatalf("encode: %v", err)
	}
	return f.do(http.MethodPost, p.Issuer+"/"+endpoint, "application/json", bytes.NewReader(b), nil)
}

// login logs alice in with the password grant and returns her tokens.
func (f *fixture) login() answer {
	f.t.Helper()
	r := f.postForm(f.policy, "token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}}, nil)
	if r.status != http.StatusOK {
		f.t.Fatalf("login: got %d %s; want 200", r.status, r.body)
	}
	return r.answer(f.t)
}

// refresh redeems rt with the refresh grant.
func (f *fixture) refresh(rt string) response {
	f.t.Helper()
	return f.postForm(f.policy, "token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, nil)
}

// mustRefresh redeems rt and fails the test unless it succeeds.
func (f *fixture) mustRefresh(rt string) answer {
	f.t.Helper()
	r := f.refresh(rt)
	if r.status != http.StatusOK {
		f.t.Fatalf("refresh: got %d %s; want 200", r.status, r.body)
	}
	return r.answer(f.t)
}

// introspect asks about tok as the listed ServiceAccount apps/api.
func (f *fixture) introspect(p *issuer.Policy, tok string) map[string]any {
	f.t.Helper()
	r := f.postForm(p, "introspect", url.Values{"token": {tok}}, bearer(saToken("apps", "api", p.Issuer)))
	if r.status != http.StatusOK {
		f.t.Fatalf("introspect: got %d %s; want 200", r.status, r.body)
	}
	return r.object(f.t)
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// mint signs a session's generation-0 tokens with p's codec directly, bypassing the server.
func (f *fixture) mint(p *issuer.Policy, subject string) (access, refresh string) {
	f.t.Helper()
	now := f.clock.Now().Truncate(time.Second)
	s := token.Session{ID: revocation.NewSessionID(0), Subject: subject, AuthTime: now, Expiry: now.Add(sessionLife)}
	access, _, err := p.Codec.MintAccess(s, 0, now)
	if err != nil {
		f.t.Fatalf("mint access: %v", err)
	}
	refresh, _, err = p.Codec.MintRefresh(s, 0, now)
	if err != nil {
		f.t.Fatalf("mint refresh: %v", err)
	}
	return access, refresh
}

// metric is the value of the counter name with labels (name=value pairs), 0 when absent.
func (f *fixture) metric(name string, labels ...string) float64 {
	f.t.Helper()
	families, err := f.registry.Gather()
	if err != nil {
		f.t.Fatalf("gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// expectError fails the test unless r is an error with status and code, and with the headers every
// error carries.
func expectError(t testing.TB, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("got status %d (%s); want %d", r.status, r.body, status)
	}
	a := r.answer(t)
	if a.Error != code {
		t.Errorf("got error %q (%s); want %q", a.Error, a.ErrorDescription, code)
	}
	if a.AccessToken != "" || a.RefreshToken != "" {
		t.Errorf("got tokens in an error answer: %s", r.body)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("got Content-Type %q; want application/json", got)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("got Cache-Control %q; want no-store", got)
	}
}

// segments splits a JWT; tamper and the alg:none variant build on them.
func segments(t testing.TB, jwt string) (header, payload map[string]any, sig string) {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d segments", len(parts))
	}
	dec := func(s string) map[string]any {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("decode segment: %v", err)
		}
		m := map[string]any{}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("decode segment: %v", err)
		}
		return m
	}
	return dec(parts[0]), dec(parts[1]), parts[2]
}

func join(t testing.TB, header, payload map[string]any, sig string) string {
	t.Helper()
	enc := func(m map[string]any) string {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("encode segment: %v", err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(header) + "." + enc(payload) + "." + sig
}

// tampered is jwt with claim set to v and the original signature.
func tampered(t testing.TB, jwt, claim string, v any) string {
	h, p, sig := segments(t, jwt)
	p[claim] = v
	return join(t, h, p, sig)
}

// unsigned is jwt with alg none and no signature.
func unsigned(t testing.TB, jwt string) string {
	h, p, _ := segments(t, jwt)
	h["alg"] = "none"
	return join(t, h, p, "")
}

// claims decodes the payload of a JWT without verifying it.
func claims(t testing.TB, jwt string) map[string]any {
	_, p, _ := segments(t, jwt)
	return p
}

// with is f reporting to t, for subtests.
func (f *fixture) with(t testing.TB) *fixture {
	g := *f
	g.t = t
	return &g
}

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/bcrypt"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/controllers"
	"github.com/tokenwarden/tokenwarden/internal/login"
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

// peerSecret is the replicas' peer key Secret, which the controller keeps, as the chart names it.
const peerSecret = "tokenwarden-issuer-peer"

// leaseDuration is the replicas' journal Lease duration: short, so that a dead owner's journal changes
// hands within a test's patience.
const leaseDuration = 2 * time.Second

// issuerNS is the issuers' namespace, as the chart's release namespace.
const issuerNS = "tokenwarden-system"

func TestMain(m *testing.M) {
	testenv.Main(m, &env, startController)
}

// startController runs the TokenPolicy and TokenRevocation reconcilers for the whole package.
func startController(e *testenv.Env) error {
	var err error
	if clientset, err = kubernetes.NewForConfig(e.Config); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{Scheme: e.Scheme, Cache: controllers.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"}})
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

// replica is one running issuer.
type replica struct {
	base string // http://127.0.0.1:port
	peer string // 127.0.0.1:port, its peer port
	stop func()
}

// startReplica starts an issuer replica serving externalURL (or its own address when own is true).
func startReplica(t *testing.T, clk clock.PassiveClock, own bool) *replica {
	t.Helper()
	return startReplicaWith(t, clk, own, nil)
}

// startReplicaWith is startReplica with adjusted options (TLS, for one).
func startReplicaWith(t *testing.T, clk clock.PassiveClock, own bool, adjust func(*app.Options)) *replica {
	t.Helper()
	o := app.Options{ExternalURL: externalURL, Namespace: issuerNS, Clock: clk, Logger: logr.Discard(), ServerOptions: func(c *issuer.ServerConfig) {
		c.IPRate = issuer.RateLimit{PerSecond: 10000, Burst: 10000} // the tests log in fast from one address
		c.UsernameRate = issuer.RateLimit{PerSecond: 10000, Burst: 10000}
	}, Peers: &app.Peers{KeySecret: peerSecret, LeaseDuration: leaseDuration}}
	if own {
		o.ExternalURL = ""
	}
	if adjust != nil {
		adjust(&o)
	}
	r := apptest.Start(t, env.Config, o)
	return &replica{base: r.Base, peer: r.Peer, stop: r.Stop}
}

// passwordHash is the bcrypt hash of "wonderland" at the lowest cost a users Secret may hold.
var passwordHash = sync.OnceValues(func() ([]byte, error) { return bcrypt.GenerateFromPassword([]byte("wonderland"), login.MinCost) })

// fixture is a namespace with a policy, a user, an introspecting ServiceAccount, and replicas.
type fixture struct {
	t        *testing.T
	ns       string
	policy   string
	clock    *clocktesting.FakeClock
	replicas []*replica
}

func (f *fixture) path() string { return "/" + f.ns + "/" + f.policy }

// newFixture creates the policy (spec adjusted by mutate) and starts n replicas that share a clock.
func newFixture(t *testing.T, n int, mutate func(*v1alpha1.TokenPolicySpec)) *fixture {
	t.Helper()
	f := &fixture{t: t, ns: env.Namespace(t), policy: "payments", clock: clocktesting.NewFakeClock(time.Now().Truncate(time.Second))}
	ctx := context.Background()
	hash, err := passwordHash()
	if err != nil {
		t.Fatal(err)
	}
	users := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "users", Annotations: map[string]string{v1alpha1.AnnotationAllowedPolicies: f.policy}},
		Data: map[string][]byte{"alice": hash, "bob": hash}}
	must(t, env.Client.Create(ctx, users))
	for _, sa := range []string{"introspector", "app"} {
		must(t, env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: sa}}))
	}
	p := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: f.policy}, Spec: v1alpha1.TokenPolicySpec{
		Audiences:     []string{"payments-api"},
		Login:         v1alpha1.LoginSpec{PasswordSecretName: "users", ServiceAccounts: []v1alpha1.ServiceAccountRef{{Namespace: f.ns, Name: "app"}}},
		Introspection: v1alpha1.IntrospectionSpec{ServiceAccounts: []v1alpha1.ServiceAccountRef{{Namespace: f.ns, Name: "introspector"}}},
		Revocation:    v1alpha1.RevocationSpec{Shards: 2},
	}}
	if mutate != nil {
		mutate(&p.Spec)
	}
	must(t, env.Client.Create(ctx, p))
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return false, err.Error()
		}
		return meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady), "policy not Ready"
	})
	for range n {
		f.replicas = append(f.replicas, startReplica(t, f.clock, false))
	}
	for _, r := range f.replicas {
		f.waitServed(r)
	}
	return f
}

// waitServed waits until r serves the policy (its informers have seen the policy and its keys).
func (f *fixture) waitServed(r *replica) {
	testenv.Eventually(f.t, 30*time.Second, func() (bool, string) {
		resp, err := http.Get(r.base + f.path() + "/jwks.json")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("jwks status %d", resp.StatusCode)
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// response is an HTTP answer.
type response struct {
	status int
	body   []byte
	json   map[string]any
}

func (r response) str(k string) string { s, _ := r.json[k].(string); return s }

func post(t *testing.T, u string, form url.Values, header http.Header) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	must(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, body: body, json: map[string]any{}}
	_ = json.Unmarshal(body, &out.json)
	return out
}

// token posts a token request to replica i.
func (f *fixture) token(i int, form url.Values) response {
	return post(f.t, f.replicas[i%len(f.replicas)].base+f.path()+"/token", form, nil)
}

func (f *fixture) login(i int, user string) response {
	f.t.Helper()
	r := f.token(i, url.Values{"grant_type": {"password"}, "username": {user}, "password": {"wonderland"}})
	if r.status != http.StatusOK {
		f.t.Fatalf("login of %s: %d %s", user, r.status, r.body)
	}
	return r
}

func (f *fixture) refresh(i int, rt string) response {
	return f.token(i, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
}

// saToken is a ServiceAccount token for the policy's issuer URL, made by the real TokenRequest API.
func (f *fixture) saToken(name, audience string) string {
	f.t.Helper()
	tr, err := clientset.CoreV1().ServiceAccounts(f.ns).CreateToken(context.Background(), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}}}, metav1.CreateOptions{})
	must(f.t, err)
	return tr.Status.Token
}

// introspect asks replica i about tok as the allowed ServiceAccount.
func (f *fixture) introspect(i int, bearer, tok string) response {
	return post(f.t, f.replicas[i%len(f.replicas)].base+f.path()+"/introspect", url.Values{"token": {tok}},
		http.Header{"Authorization": {"Bearer " + bearer}})
}

// eventuallyInactive waits until every replica says tok is inactive.
func (f *fixture) eventuallyInactive(tok string) {
	f.t.Helper()
	bearer := f.saToken("introspector", externalURL+f.path())
	for i := range f.replicas {
		testenv.Eventually(f.t, 30*time.Second, func() (bool, string) {
			r := f.introspect(i, bearer, tok)
			return r.status == http.StatusOK && r.json["active"] == false, fmt.Sprintf("replica %d: %d %s", i, r.status, r.body)
		})
	}
}

var _ = rbacv1.ClusterRole{}

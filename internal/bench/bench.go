package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/bcrypt"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/controllers"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/internal/kube"
	"github.com/tokenwarden/tokenwarden/internal/login"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
	"github.com/tokenwarden/tokenwarden/issuer/peer"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// Config is what a run does.
type Config struct {
	Assets       string        // kube-apiserver and etcd
	CRDDir       string        // config/crd/bases
	IssuerBinary string        // the tokenwarden binary, run as the issuer replicas
	BoundBinary  string        // the load tool's own binary, run as the bound server ('bench --serve-bound')
	Duration     time.Duration // per scenario
	Full         bool          // the whole matrix instead of the default selection
	Only         string        // run only the scenarios whose description contains this; "" for all
	Profile      string        // folder for CPU profiles of the issuers under the EdDSA refresh scenarios; "" for none
	WorkDir      string        // logs and kubeconfig
	Out          io.Writer
}

// scenario is one row of the report. With several replicas, each request goes to one of them at random,
// as a Service spreads its many clients' connections.
type scenario struct {
	kind        string // login, refresh, introspect, mixed
	alg         v1alpha1.SigningAlgorithm
	concurrency int
	sessions    int
	replicas    int
}

func (s scenario) String() string {
	return fmt.Sprintf("%s %s c%d %s sessions, %d replica(s)", s.kind, s.alg, s.concurrency, count(s.sessions), s.replicas)
}

func count(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// scenarios is the default selection: every figure of the targets table, in a few minutes.
func scenarios(full bool) []scenario {
	if full {
		var out []scenario
		for _, kind := range []string{"login", "refresh", "introspect", "mixed"} {
			for _, alg := range []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.HS256} {
				for _, c := range []int{1, 16, 64} {
					for _, n := range []int{1000, 10000, 100000} {
						out = append(out, scenario{kind, alg, c, n, 1})
					}
				}
			}
		}
		return append(out, scaleOut...)
	}
	return []scenario{
		{"refresh", v1alpha1.EdDSA, 1, 10000, 1},
		{"refresh", v1alpha1.EdDSA, 16, 10000, 1},
		{"refresh", v1alpha1.EdDSA, 64, 10000, 1},
		{"refresh", v1alpha1.ES256, 64, 10000, 1},
		{"refresh", v1alpha1.HS256, 64, 10000, 1},
		{"refresh", v1alpha1.EdDSA, 64, 1000, 1},
		{"refresh", v1alpha1.EdDSA, 64, 100000, 1},
		{"login", v1alpha1.EdDSA, 16, 1000, 1},
		{"introspect", v1alpha1.EdDSA, 64, 10000, 1},
		{"mixed", v1alpha1.EdDSA, 64, 10000, 1},
		scaleOut[0],
		scaleOut[1],
	}
}

// scaleOut are the rows the report compares with the same scenario on one replica: the same policy, sessions
// and load, spread over more replicas.
var scaleOut = []scenario{
	{"refresh", v1alpha1.EdDSA, 64, 10000, 2},
	{"refresh", v1alpha1.EdDSA, 64, 10000, 3},
}

// row is a scenario's measured figures.
type row struct {
	scenario
	res            *result
	writesPerOp    float64
	bytesPerOp     float64
	conflicts      float64
	cpuPer1000     float64
	peakRSS        int64
	bound          float64 // ops/s of the bound in the same run; 0 when none applies
	boundKind      string
	storeOpsPerOps float64
	apiCPUPer1000  float64 // kube-apiserver and etcd
	forwarded      float64 // decisions a replica sent to the journal's owner and had answered, per operation
}

const externalURL = "http://tokenwarden.bench"

// Run runs the load tool and prints the report.
func Run(ctx context.Context, cfg Config) error {
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return err
	}
	out := cfg.Out
	fmt.Fprintf(out, "tokenwarden load tool: %d CPUs, %s per scenario; control plane, controller, issuers and load on this machine\n", runtime.NumCPU(), cfg.Duration)
	env := &envtest.Environment{BinaryAssetsDirectory: cfg.Assets, CRDDirectoryPaths: []string{cfg.CRDDir}, ErrorIfCRDPathMissing: true}
	restCfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	defer func() { _ = env.Stop() }()
	user, err := env.AddUser(envtest.User{Name: "bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(cfg.WorkDir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := startController(ctx, restCfg); err != nil {
		return err
	}
	b := &bench{cfg: cfg, rest: restCfg, kubeconfig: kubeconfig}
	if b.client, err = client.New(restCfg, client.Options{Scheme: kube.Scheme()}); err != nil {
		return err
	}
	if b.clientset, err = kubernetes.NewForConfig(restCfg); err != nil {
		return err
	}
	if err := b.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}); err != nil {
		return err
	}
	if err := b.client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "introspector"}}); err != nil {
		return err
	}
	if b.hash, err = bcrypt.GenerateFromPassword([]byte("bench-password"), login.MinCost); err != nil {
		return err
	}

	fmt.Fprintln(out, "Measuring the crypto bounds...")
	algs := []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.HS256}
	crypto, err := measureCrypto(algs)
	if err != nil {
		return err
	}
	bounds := map[v1alpha1.SigningAlgorithm]*result{}
	for _, alg := range algs {
		fmt.Fprintf(out, "Bound: bare net/http refresh handler, %s, c64...\n", alg)
		if bounds[alg], err = b.runBound(ctx, alg); err != nil {
			return err
		}
	}

	var rows []row
	for _, sc := range scenarios(cfg.Full) {
		if !strings.Contains(sc.String(), cfg.Only) {
			continue
		}
		fmt.Fprintf(out, "Scenario: %s...\n", sc)
		r, err := b.runScenario(ctx, sc)
		if err != nil {
			return fmt.Errorf("%s: %w", sc, err)
		}
		switch sc.kind {
		case "refresh", "mixed":
			r.bound, r.boundKind = bounds[sc.alg].rate(), "bare handler"
		case "login":
			r.bound, r.boundKind = float64(runtime.NumCPU())/crypto.bcrypt.Seconds(), "bcrypt x CPUs"
		}
		rows = append(rows, *r)
		fmt.Fprintf(out, "  %.0f ops/s, p50 %s p99 %s, errors %s, forwarded %.2f\n", r.res.rate(), ms(r.res.percentile(.5)), ms(r.res.percentile(.99)), r.res.errorText(), r.forwarded)
	}
	report(out, cfg, crypto, bounds, rows)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// startController runs the reconcilers in this process (their CPU is not the issuer's), and waits for the
// replicas' peer key it keeps: a replica without it answers 503 for what it would forward.
func startController(ctx context.Context, cfg *rest.Config) error {
	ctrl.SetLogger(logr.Discard())
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: kube.Scheme(), Cache: controllers.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		return err
	}
	// Merges of sealed segments follow seals by ShardStatusPeriod: 2 s keeps them inside a scenario's window
	// (their writes count in its figures), at some controller CPU taken from the load generator.
	c, err := client.New(cfg, client.Options{Scheme: kube.Scheme()})
	if err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: issuerNamespace}}); err != nil {
		return err
	}
	if err := controllers.Setup(mgr, controllers.Options{IssuerURL: externalURL, IssuerNamespace: issuerNamespace, ShardStatusPeriod: 2 * time.Second,
		IssuerPeerSecret: peerSecret}); err != nil {
		return err
	}
	go func() { _ = mgr.Start(ctx) }()
	key := types.NamespacedName{Namespace: issuerNamespace, Name: peerSecret}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return c.Get(ctx, key, &corev1.Secret{}) == nil, nil
	}); err != nil {
		return fmt.Errorf("the controller did not create the peer key Secret %s: %w", key, err)
	}
	return nil
}

const (
	// issuerNamespace is the issuer's namespace, where the controller materialises what it serves.
	issuerNamespace = "tokenwarden-system"
	// peerSecret holds the replicas' peer key: the controller keeps it, the replicas read it.
	peerSecret = "tokenwarden-issuer-peer"
	// settleMargin is how long after the bench sees a Lease change the replicas are taken to have seen it
	// too.
	settleMargin = time.Second
)

type bench struct {
	hash       []byte // of every user's password
	cfg        Config
	rest       *rest.Config
	kubeconfig string
	client     client.Client
	clientset  *kubernetes.Clientset
	policies   int
}

// policy creates a TokenPolicy for a scenario, sized for its sessions, and waits until it is Ready.
func (b *bench) policy(ctx context.Context, sc scenario) (*v1alpha1.TokenPolicy, error) {
	b.policies++
	shards := int32(max(4, (sc.sessions+2499)/2500)) // about 2,500 records (330 KB) a shard at most
	p := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("p%d-%s", b.policies, strings.ToLower(string(sc.alg)))},
		Spec: v1alpha1.TokenPolicySpec{
			Audiences:     []string{"bench-api"},
			Signing:       v1alpha1.SigningSpec{Algorithm: sc.alg},
			Login:         v1alpha1.LoginSpec{PasswordSecretName: fmt.Sprintf("users-%d", b.policies)},
			Introspection: v1alpha1.IntrospectionSpec{ServiceAccounts: []v1alpha1.ServiceAccountRef{{Namespace: "bench", Name: "introspector"}}},
			Revocation:    v1alpha1.RevocationSpec{Shards: shards},
		}}
	users := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Spec.Login.PasswordSecretName,
		Labels: map[string]string{v1alpha1.LabelPolicy: p.Name}, Annotations: map[string]string{v1alpha1.AnnotationAllowedPolicies: p.Name}},
		Data: map[string][]byte{}}
	for i := range 100 {
		users.Data[fmt.Sprintf("user-%d", i)] = b.hash
	}
	if err := b.client.Create(ctx, users); err != nil {
		return nil, err
	}
	if err := b.client.Create(ctx, p); err != nil {
		return nil, err
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := b.client.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return false, nil
		}
		return meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady), nil
	})
	return p, err
}

// remove deletes a scenario's policy and what it owns once the scenario is over, so that the controller's
// work on it (merging its segments) does not land in the next scenario's figures. The controller removes
// what it materialised in the issuer's namespace before the policy goes (its finalizer); the control plane
// here has no garbage collector, so what the policy owns beside it is deleted by label.
func (b *bench) remove(p *v1alpha1.TokenPolicy) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = b.client.Delete(ctx, p)
	_ = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		return apierrors.IsNotFound(b.client.Get(ctx, client.ObjectKeyFromObject(p), &v1alpha1.TokenPolicy{})), nil
	})
	owned := []client.DeleteAllOfOption{client.InNamespace(p.Namespace), client.MatchingLabels{v1alpha1.LabelPolicy: p.Name}}
	_ = b.client.DeleteAllOf(ctx, &corev1.ConfigMap{}, owned...)
	_ = b.client.DeleteAllOf(ctx, &corev1.Secret{}, owned...)
}

// session is a preloaded live session: its newest tokens.
type session struct {
	access, refresh string
}

// preload creates n live sessions of policy p as the issuer would leave them after one refresh: a record
// at generation 1 in the session's shard, and the tokens of generation 1.
func (b *bench) preload(ctx context.Context, p *v1alpha1.TokenPolicy, n int) ([]session, error) {
	secret := &corev1.Secret{}
	if err := b.client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Name + "-signing-keys"}, secret); err != nil {
		return nil, err
	}
	set, err := keys.FromSecret(p.Spec.Signing.Algorithm, secret)
	if err != nil {
		return nil, err
	}
	codec, err := token.New(token.Policy{Issuer: externalURL + "/" + p.Namespace + "/" + p.Name, Audiences: p.Spec.Audiences,
		AccessLifetime: p.Spec.AccessToken.Lifetime.Duration, Keys: set}, clock.RealClock{})
	if err != nil {
		return nil, err
	}
	shards := int(p.Spec.Revocation.Shards)
	now := time.Now().Truncate(time.Second)
	records := make([]map[string]string, shards)
	for i := range records {
		records[i] = map[string]string{}
	}
	out := make([]session, n)
	for i := range n {
		shard := rand.IntN(shards)
		s := token.Session{ID: revocation.NewSessionID(shard), Subject: fmt.Sprintf("user-%d", i%100), AuthTime: now, Expiry: now.Add(p.Spec.RefreshToken.Lifetime.Duration)}
		at, _, err := codec.MintAccess(s, 1, now)
		if err != nil {
			return nil, err
		}
		rt, _, err := codec.MintRefresh(s, 1, now)
		if err != nil {
			return nil, err
		}
		out[i] = session{access: at, refresh: rt}
		records[shard][revocation.SessionKey(s.ID)] = revocation.EncodeSession(revocation.Session{Subject: s.Subject, Generation: 1, Rotated: now, Expiry: s.Expiry, State: revocation.Active})
	}
	for i, recs := range records {
		key := types.NamespacedName{Namespace: issuerNamespace, Name: configmap.For(p, issuerNamespace).BaseName(i)}
		if _, _, err := configmap.UpdateShard(ctx, b.client, b.client, key, nil, func(data map[string]string) (bool, error) {
			for k, v := range recs {
				data[k] = v
			}
			return len(recs) > 0, nil
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// replicas starts n issuer processes, each with its peer port on loopback, waits until each serves policy
// p with its preloaded shards, and then until p's journal has the owner they agree on.
func (b *bench) replicas(ctx context.Context, n int, p *v1alpha1.TokenPolicy, tag string) ([]*process, error) {
	// A stopped replica deletes its membership Lease; one left by a replica that was killed would count
	// as a live replica for a Lease duration, and might be handed the journal.
	if err := b.client.DeleteAllOf(ctx, &coordinationv1.Lease{}, client.InNamespace(issuerNamespace),
		client.MatchingLabels{v1alpha1.LabelComponent: peer.ComponentLease, peer.LabelLeaseRole: peer.RoleMember}); err != nil {
		return nil, fmt.Errorf("delete the membership Leases of stopped replicas: %w", err)
	}
	var procs []*process
	for i := range n {
		metricsAddr, err := freePort()
		if err != nil {
			stopAll(procs)
			return nil, err
		}
		args := []string{"issuer", "--external-url", externalURL, "--namespace", issuerNamespace, "--metrics-listen", metricsAddr,
			"--password-rate-per-client", "1e9", "--password-burst-per-client", "1000000",
			"--password-rate-per-user", "1e9", "--password-burst-per-user", "1000000",
			"--peer-listen", "127.0.0.1:0", "--peer-key-secret", peerSecret}
		if b.cfg.Profile != "" {
			args = append(args, "--pprof")
		}
		proc, err := start(ctx, b.cfg.IssuerBinary, []string{"KUBECONFIG=" + b.kubeconfig}, filepath.Join(b.cfg.WorkDir, fmt.Sprintf("issuer-%s-%d.log", tag, i)), "/readyz", args...)
		if err != nil {
			stopAll(procs)
			return nil, err
		}
		proc.metrics = "http://" + metricsAddr
		procs = append(procs, proc)
	}
	for _, proc := range procs {
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			resp, err := http.Get(proc.base + "/" + p.Namespace + "/" + p.Name + "/jwks.json")
			if err != nil {
				return false, nil
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, nil
		})
		if err != nil {
			stopAll(procs)
			return nil, fmt.Errorf("replica %s does not serve %s: %w", proc.base, p.Name, err)
		}
	}
	if err := b.settle(ctx, n, p); err != nil {
		stopAll(procs)
		return nil, err
	}
	return procs, nil
}

// journalLease is the Lease naming the owner of policy p's journal.
func journalLease(p *v1alpha1.TokenPolicy) types.NamespacedName {
	return types.NamespacedName{Namespace: issuerNamespace, Name: peer.JournalLeaseName(configmap.For(p, issuerNamespace).JournalName())}
}

// settle waits until p's journal has its lasting owner: the n replicas' membership Leases are there, and
// the journal's Lease was renewed after every replica could see all of them, so by a holder whose plan
// counted every replica (the others compute the same plan, and leave it the journal). Before that, the
// first replica up may still hold a journal it is about to hand over, and decisions would wait for the
// handover inside the measured window.
func (b *bench) settle(ctx context.Context, n int, p *v1alpha1.TokenPolicy) error {
	var all time.Time // when the bench first saw every membership
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if all.IsZero() {
			var members coordinationv1.LeaseList
			if err := b.client.List(ctx, &members, client.InNamespace(issuerNamespace),
				client.MatchingLabels{v1alpha1.LabelComponent: peer.ComponentLease, peer.LabelLeaseRole: peer.RoleMember}); err != nil || len(members.Items) < n {
				return false, nil
			}
			all = time.Now()
		}
		l := &coordinationv1.Lease{}
		if err := b.client.Get(ctx, journalLease(p), l); err != nil {
			return false, nil
		}
		return ptr.Deref(l.Spec.HolderIdentity, "") != "" && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(all.Add(settleMargin)), nil
	})
	if err != nil {
		return fmt.Errorf("the journal of %s has no settled owner among %d replica(s): %w", p.Name, n, err)
	}
	return nil
}

// owner is who holds p's journal now, and how many times it changed hands.
func (b *bench) owner(ctx context.Context, p *v1alpha1.TokenPolicy) string {
	l := &coordinationv1.Lease{}
	if err := b.client.Get(ctx, journalLease(p), l); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return fmt.Sprintf("%s after %d transition(s)", ptr.Deref(l.Spec.HolderIdentity, "none"), ptr.Deref(l.Spec.LeaseTransitions, 0))
}

// warmUp refreshes one session through each replica until each has answered once: a replica that has not
// loaded the peer key yet, or finds no owner, answers 503 to what it would forward. Not measured.
func warmUp(ctx context.Context, procs []*process, refresh func(ctx context.Context, base string) string) error {
	for _, proc := range procs {
		last := ""
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			last = refresh(ctx, proc.base)
			return last == "", nil
		})
		if err != nil {
			return fmt.Errorf("replica %s does not refresh (last: %s): %w", proc.base, last, err)
		}
	}
	return nil
}

func stopAll(procs []*process) {
	for _, p := range procs {
		p.stop()
	}
}

var storeCounters = []string{"tokenwarden_store_writes_total", "tokenwarden_store_bytes_written_total", "tokenwarden_store_conflicts_total", "tokenwarden_store_operations_total"}

// forwardedAnswered counts the decisions a replica sent to their journal's owner and had answered.
const forwardedAnswered = `tokenwarden_peer_forwarded_total{outcome="answered"}`

// compactionCounters are the in-process controller's: merges of sealed segments into the bases.
var compactionCounters = []string{"tokenwarden_compaction_writes_total", "tokenwarden_compaction_bytes_written_total"}

// sumMetrics adds up the store counters and forwardedAnswered of every issuer process, and the controller's
// merge writes and bytes into the store's: both are what the API server receives for the operations.
func sumMetrics(procs []*process, policy string) (map[string]float64, error) {
	total := map[string]float64{}
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return nil, err
	}
	for _, f := range families {
		for i, name := range compactionCounters {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == policy {
					total[storeCounters[i]] += m.GetCounter().GetValue()
				}
			}
		}
	}
	for _, p := range procs {
		m, err := metrics(p.metrics, append(slices.Clip(storeCounters), forwardedAnswered)...)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			total[k] += v
		}
	}
	return total, nil
}

// runScenario sets up a policy and its sessions, starts fresh issuer processes, drives the load and
// collects the figures.
func (b *bench) runScenario(ctx context.Context, sc scenario) (*row, error) {
	p, err := b.policy(ctx, sc)
	if err != nil {
		return nil, err
	}
	sessions, err := b.preload(ctx, p, sc.sessions)
	if err != nil {
		return nil, err
	}
	defer b.remove(p)
	procs, err := b.replicas(ctx, sc.replicas, p, p.Name)
	if err != nil {
		return nil, err
	}
	defer stopAll(procs)
	iss := externalURL + "/" + p.Namespace + "/" + p.Name
	path := "/" + p.Namespace + "/" + p.Name
	tr, err := b.clientset.CoreV1().ServiceAccounts("bench").CreateToken(ctx, "introspector",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{iss}}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	bearer := http.Header{"Authorization": {"Bearer " + tr.Status.Token}}
	cl := newClient(sc.concurrency)
	// Each request goes to a replica at random, as a Service spreads many clients.
	replica := func() string { return procs[rand.IntN(len(procs))].base }

	// Worker w owns the sessions i with i % concurrency == w, and cycles through them.
	next := make([]int, sc.concurrency)
	pick := func(w int) int {
		i := w + next[w]*sc.concurrency
		if i >= len(sessions) {
			next[w], i = 0, w
		}
		next[w]++
		return i
	}
	refreshAt := func(ctx context.Context, base string, i int) string {
		resp, kind := cl.post(ctx, base+path+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {sessions[i].refresh}}, nil)
		if kind == "" {
			sessions[i].refresh, _ = resp["refresh_token"].(string)
			sessions[i].access, _ = resp["access_token"].(string)
		}
		return kind
	}
	refresh := func(ctx context.Context, w int) string {
		return refreshAt(ctx, replica(), pick(w))
	}
	introspect := func(ctx context.Context, w int) string {
		i := pick(w)
		resp, kind := cl.post(ctx, replica()+path+"/introspect", url.Values{"token": {sessions[i].access}}, bearer)
		if kind == "" && resp["active"] != true {
			return "inactive"
		}
		return kind
	}
	var f op
	switch sc.kind {
	case "refresh":
		f = refresh
	case "introspect":
		f = introspect
	case "mixed":
		f = func(ctx context.Context, w int) string {
			if rand.IntN(2) == 0 {
				return refresh(ctx, w)
			}
			return introspect(ctx, w)
		}
	case "login":
		f = func(ctx context.Context, w int) string {
			_, kind := cl.post(ctx, replica()+path+"/token", url.Values{"grant_type": {"password"}, "username": {fmt.Sprintf("user-%d", w%100)}, "password": {"bench-password"}}, nil)
			return kind
		}
	default:
		return nil, errors.New("unknown scenario kind " + sc.kind)
	}

	// A session per attempt, from the last one down: a failed attempt may leave its session's state unknown.
	// The workers go on from the tokens these refreshes return.
	warm := len(sessions)
	if err := warmUp(ctx, procs, func(ctx context.Context, base string) string {
		warm = (warm - 1 + len(sessions)) % len(sessions)
		return refreshAt(ctx, base, warm)
	}); err != nil {
		return nil, err
	}
	owner := b.owner(ctx, p)
	before, err := sumMetrics(procs, p.Namespace+"/"+p.Name)
	if err != nil {
		return nil, err
	}
	cpuBefore := 0.0
	for _, p := range procs {
		cpuBefore += p.cpuSeconds()
	}
	apiBefore := childCPU("kube-apiserver") + childCPU("etcd")
	profileDone := b.profile(ctx, sc, procs)
	res := drive(ctx, sc.concurrency, b.cfg.Duration, 0, f)
	<-profileDone
	if now := b.owner(ctx, p); now != owner {
		fmt.Fprintf(b.cfg.Out, "  the journal changed owner during the scenario: from %s to %s\n", owner, now)
	}
	after, err := sumMetrics(procs, p.Namespace+"/"+p.Name)
	if err != nil {
		return nil, err
	}
	cpu := 0.0
	var rss int64
	for _, p := range procs {
		cpu += p.cpuSeconds()
		rss = max(rss, p.peakRSS())
	}
	r := &row{scenario: sc, res: res, cpuPer1000: (cpu - cpuBefore) / float64(max(res.ops, 1)) * 1000, peakRSS: rss,
		apiCPUPer1000: (childCPU("kube-apiserver") + childCPU("etcd") - apiBefore) / float64(max(res.ops, 1)) * 1000}
	if ops := float64(res.ops - errorsTotal(res)); ops > 0 {
		r.writesPerOp = (after[storeCounters[0]] - before[storeCounters[0]]) / ops
		r.bytesPerOp = (after[storeCounters[1]] - before[storeCounters[1]]) / ops
		r.storeOpsPerOps = (after[storeCounters[3]] - before[storeCounters[3]]) / ops
		r.forwarded = (after[forwardedAnswered] - before[forwardedAnswered]) / ops
	}
	r.conflicts = after[storeCounters[2]] - before[storeCounters[2]]
	return r, nil
}

func errorsTotal(r *result) int {
	n := 0
	for _, v := range r.errors {
		n += v
	}
	return n
}

// profile takes a CPU profile of each issuer replica during the EdDSA refresh scenarios at c64 with 10k
// sessions, when asked to: issuer-refresh-eddsa-c64.pprof for one replica, and
// issuer-refresh-eddsa-c64-<n>x-<i>.pprof for replica i of n.
func (b *bench) profile(ctx context.Context, sc scenario, procs []*process) <-chan struct{} {
	done := make(chan struct{})
	if b.cfg.Profile == "" || sc.kind != "refresh" || sc.alg != v1alpha1.EdDSA || sc.concurrency != 64 || sc.sessions != 10000 {
		close(done)
		return done
	}
	secs := int(max(1, b.cfg.Duration.Seconds()-1))
	var wg sync.WaitGroup
	for i, p := range procs {
		name := "issuer-refresh-eddsa-c64.pprof"
		if len(procs) > 1 {
			name = fmt.Sprintf("issuer-refresh-eddsa-c64-%dx-%d.pprof", len(procs), i)
		}
		wg.Go(func() {
			if err := b.profileTo(ctx, p, secs, filepath.Join(b.cfg.Profile, name)); err != nil {
				fmt.Fprintf(b.cfg.Out, "  no profile %s: %v\n", name, err)
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

// profileTo writes a CPU profile of p over secs seconds to path.
func (b *bench) profileTo(ctx context.Context, p *process, secs int, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.metrics, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	if err := os.MkdirAll(b.cfg.Profile, 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runBound drives the bare handler of alg, in its own process, at concurrency 64.
func (b *bench) runBound(ctx context.Context, alg v1alpha1.SigningAlgorithm) (*result, error) {
	proc, err := start(ctx, b.cfg.BoundBinary, nil, filepath.Join(b.cfg.WorkDir, "bound-"+string(alg)+".log"), "/healthz", "bench", "--serve-bound", string(alg))
	if err != nil {
		return nil, err
	}
	defer proc.stop()
	const c = 64
	resp, err := http.Get(proc.base + "/seed?n=" + fmt.Sprint(c))
	if err != nil {
		return nil, err
	}
	var tokens []string
	err = json.NewDecoder(resp.Body).Decode(&tokens)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	cl := newClient(c)
	return drive(ctx, c, b.cfg.Duration, 0, func(ctx context.Context, w int) string {
		out, kind := cl.post(ctx, proc.base+"/refresh", url.Values{"refresh_token": {tokens[w]}}, nil)
		if kind == "" {
			tokens[w], _ = out["refresh_token"].(string)
		}
		return kind
	}), nil
}

package configmap_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
	"github.com/tokenwarden/tokenwarden/internal/revocation/storetest"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

var policies atomic.Int64

// createShards creates a policy's shard ConfigMaps as the controller does.
func createShards(t testing.TB, shards int) types.NamespacedName {
	t.Helper()
	ns := env.Namespace(t)
	policy := types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("p%d", policies.Add(1))}
	for i := range shards {
		for _, name := range []string{revocation.ShardName(policy.Name, i), revocation.JournalName(policy.Name, i)} {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
				Labels: map[string]string{v1alpha1.LabelPolicy: policy.Name, v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}}}
			if err := env.Client.Create(context.Background(), cm); err != nil {
				t.Fatal(err)
			}
		}
	}
	return policy
}

// replica starts one issuer replica's view: its own informer over the shards, its own store.
func replica(t *testing.T, opts configmap.Options) *configmap.Store { return replicaB(t, opts) }

func replicaB(t testing.TB, opts configmap.Options) *configmap.Store {
	t.Helper()
	c, err := cache.New(env.Config, cache.Options{Scheme: env.Scheme, ByObject: map[client.Object]cache.ByObject{
		&corev1.ConfigMap{}: {Label: labelsComponent()}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	inf, err := c.GetInformer(ctx, &corev1.ConfigMap{})
	if err != nil {
		t.Fatal(err)
	}
	s := configmap.New(env.Client, env.Client, opts)
	if _, err := inf.AddEventHandler(s.EventHandler()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = c.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return s
}

func TestConfigMapStoreConforms(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Replicas: func(t *testing.T, n, shards int) (types.NamespacedName, []revocation.Store) {
			policy := createShards(t, shards)
			out := make([]revocation.Store, n)
			for i := range out {
				out[i] = replica(t, configmap.Options{})
			}
			return policy, out
		},
		Propagation: 30 * time.Second,
	})
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func refresh(policy types.NamespacedName, sid string, gen uint64) revocation.RefreshRequest {
	return revocation.RefreshRequest{Place: revocation.Place{Policy: policy, Shard: 0}, SessionID: sid, Subject: "alice",
		Generation: gen, AuthTime: t0, Expiry: t0.Add(24 * time.Hour), Now: t0.Add(time.Minute)}
}

func TestRecordsAreReadableInTheShard(t *testing.T) {
	policy := createShards(t, 1)
	s := replica(t, configmap.Options{})
	if _, err := s.Refresh(context.Background(), refresh(policy, "sid-readable", 0)); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: policy.Namespace, Name: revocation.JournalName(policy.Name, 0)}, cm); err != nil {
		t.Fatal(err)
	}
	got := cm.Data["s.sid-readable"]
	for _, want := range []string{`"sub":"alice"`, `"gen":1`, `"state":"active"`, `"exp":"2026-03-02T12:00:00Z"`} {
		if !strings.Contains(got, want) {
			t.Errorf("record %s: want it to contain %s", got, want)
		}
	}
}

func TestConcurrentOperationsOnAShardAreBatched(t *testing.T) {
	policy := createShards(t, 1)
	reg := prometheus.NewRegistry()
	metrics := configmap.NewMetrics(reg)
	s := replica(t, configmap.Options{Metrics: metrics})
	const n = 200
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.Refresh(context.Background(), refresh(policy, fmt.Sprintf("batch-%d", i), 0))
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ops, writes := testutil.ToFloat64(metrics.Operations), testutil.ToFloat64(metrics.Writes)
	if ops != n {
		t.Fatalf("operations: got %v; want %d", ops, n)
	}
	if writes >= n {
		t.Fatalf("writes: got %v for %d concurrent refreshes; want fewer (operations that queue during a write share the next one)", writes, n)
	}
	t.Logf("%d refreshes committed in %v writes", n, writes)
}

func TestAFullShardRefusesNewRecordsButUpdatesExistingOnes(t *testing.T) {
	policy := createShards(t, 1)
	s := replica(t, configmap.Options{Budget: 600})
	ctx := context.Background()
	var full error
	created := []string{}
	for i := 0; i < 20 && full == nil; i++ {
		sid := fmt.Sprintf("fill-%d", i)
		if _, full = s.Refresh(ctx, refresh(policy, sid, 0)); full == nil {
			created = append(created, sid)
		}
	}
	if !errors.Is(full, revocation.ErrShardFull) || !configmap.IsUnavailable(full) {
		t.Fatalf("filling the shard: got %v; want ErrShardFull (which fails closed)", full)
	}
	if len(created) == 0 {
		t.Fatal("not one record fitted the budget")
	}
	if _, err := s.Refresh(ctx, refresh(policy, created[0], 1)); err != nil {
		t.Fatalf("refreshing a session already in the full shard: %v; want success (an update in place)", err)
	}
	if err := s.RevokeSession(ctx, revocation.RevokeSessionRequest{Place: revocation.Place{Policy: policy}, SessionID: created[0],
		Subject: "alice", Expiry: t0.Add(time.Hour), Reason: revocation.ReasonLogout, Now: t0}); err != nil {
		t.Fatalf("revoking a session already in the full shard: %v; want success", err)
	}
}

func TestAMissingShardFailsClosed(t *testing.T) {
	policy := createShards(t, 1)
	s := replica(t, configmap.Options{})
	req := refresh(policy, "sid", 0)
	req.Shard = 7 // never created
	if _, err := s.Refresh(context.Background(), req); !errors.Is(err, revocation.ErrUnavailable) {
		t.Fatalf("refresh into a missing shard: got %v; want ErrUnavailable", err)
	}
}

func labelsComponent() labels.Selector {
	return labels.SelectorFromSet(labels.Set{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations})
}

// TestConfigMapStoreConformsWhileFolding runs the suite with a journal so small that nearly every commit
// folds it into the base, so that replicas decide while records move under them.
func TestConfigMapStoreConformsWhileFolding(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Replicas: func(t *testing.T, n, shards int) (types.NamespacedName, []revocation.Store) {
			policy := createShards(t, shards)
			out := make([]revocation.Store, n)
			for i := range out {
				out[i] = replica(t, configmap.Options{JournalLimit: 1})
			}
			return policy, out
		},
		Propagation: 30 * time.Second,
	})
}

func TestFoldsKeepTheJournalSmallAndLoseNothing(t *testing.T) {
	policy := createShards(t, 1)
	reg := prometheus.NewRegistry()
	metrics := configmap.NewMetrics(reg)
	a := replica(t, configmap.Options{JournalLimit: 2048, Metrics: metrics})
	b := replica(t, configmap.Options{JournalLimit: 2048})
	ctx := context.Background()
	const n = 60
	for i := range n {
		s := []*configmap.Store{a, b}[i%2]
		if _, err := s.Refresh(ctx, refresh(policy, fmt.Sprintf("fold-%d", i), 0)); err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
	}
	if folds := testutil.ToFloat64(metrics.Folds); folds == 0 {
		t.Fatalf("no fold after %d records in a 2 KiB journal", n)
	}
	get := func(name string) map[string]string {
		cm := &corev1.ConfigMap{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: policy.Namespace, Name: name}, cm); err != nil {
			t.Fatal(err)
		}
		return cm.Data
	}
	base, journal := get(revocation.ShardName(policy.Name, 0)), get(revocation.JournalName(policy.Name, 0))
	if st := revocation.MergedStats(base, journal); st.Records != n {
		t.Fatalf("records in base and journal together: %d; want %d", st.Records, n)
	}
	if size := len(fmt.Sprint(journal)); size > 2048+1024 {
		t.Fatalf("journal holds %d bytes; want it folded near its 2 KiB limit", size)
	}
	// Every session refreshed once is at generation 1 on both replicas: generation 0 is reuse.
	for i := range n {
		s := []*configmap.Store{b, a}[i%2]
		req := refresh(policy, fmt.Sprintf("fold-%d", i), 1)
		req.Now = req.Now.Add(time.Minute)
		if _, err := s.Refresh(ctx, req); err != nil {
			t.Fatalf("second refresh of session %d on the other replica: %v", i, err)
		}
	}
	if _, err := a.Refresh(ctx, refresh(policy, "fold-0", 0)); !errors.Is(err, revocation.ErrReuse) {
		t.Fatalf("generation 0 of a folded session: got %v; want ErrReuse", err)
	}
}

// BenchmarkRefreshCommit measures refreshes of distinct sessions committed to a real API server through
// one replica's batched journal writes, in parallel; it reports API writes and bytes per refresh.
func BenchmarkRefreshCommit(b *testing.B) {
	policy := createShards(b, 4)
	reg := prometheus.NewRegistry()
	metrics := configmap.NewMetrics(reg)
	s := replicaB(b, configmap.Options{Metrics: metrics})
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			sid := revocation.NewSessionID(int(i % 4))
			req := refresh(policy, sid, 0)
			req.Shard = int(i % 4)
			if _, err := s.Refresh(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(testutil.ToFloat64(metrics.Writes)/float64(b.N), "writes/op")
	b.ReportMetric(testutil.ToFloat64(metrics.BytesWritten)/float64(b.N), "bytes-written/op")
}

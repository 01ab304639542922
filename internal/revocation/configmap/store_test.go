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
	toolscache "k8s.io/client-go/tools/cache"
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

// createShards creates a policy's shard ConfigMaps as the controller does, and returns the policy's key.
func createShards(t testing.TB, shards int) types.NamespacedName {
	t.Helper()
	ns := env.Namespace(t)
	h := handle(types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("p%d", policies.Add(1))})
	names := []string{h.JournalName()}
	for i := range shards {
		names = append(names, h.BaseName(i))
	}
	for _, name := range names {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: h.Labels()}}
		if err := env.Client.Create(context.Background(), cm); err != nil {
			t.Fatal(err)
		}
	}
	return h.Key
}

// handle is the handle on the revocation objects of the policy whose key is key.
func handle(key types.NamespacedName) configmap.Policy {
	return configmap.Policy{Key: key, Owner: key}
}

// replica starts one issuer replica's view: its own informer over the shards, its own store.
func replica(t *testing.T, opts configmap.Options) *configmap.Store { return replicaB(t, opts) }

func replicaB(t testing.TB, opts configmap.Options) *configmap.Store {
	return replicaLagging(t, opts, 0)
}

// replicaLagging is a replica whose informer delivers every event lag late (in order), as a replica on a
// slow watch does: it then decides on fresh journals with an index that has not seen the newest segments
// and bases yet.
func replicaLagging(t testing.TB, opts configmap.Options, lag time.Duration) *configmap.Store {
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
	handler := s.EventHandler()
	var delayed chan lateEvent
	if lag > 0 {
		delayed = make(chan lateEvent, 1<<16)
		handler = lagging{delayed}
		go func() {
			for e := range delayed {
				time.Sleep(time.Until(e.at.Add(lag))) // the lag being simulated, not a wait for state
				e.apply(s.EventHandler())
			}
		}()
	}
	if _, err := inf.AddEventHandler(handler); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = c.Start(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if delayed != nil {
			close(delayed)
		}
	})
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return s
}

// lagging queues informer events for late delivery.
type lagging struct{ ch chan<- lateEvent }

type lateEvent struct {
	at    time.Time
	apply func(toolscache.ResourceEventHandler)
}

func (l lagging) OnAdd(obj any, initial bool) {
	l.ch <- lateEvent{time.Now(), func(h toolscache.ResourceEventHandler) { h.OnAdd(obj, initial) }}
}

func (l lagging) OnUpdate(old, cur any) {
	l.ch <- lateEvent{time.Now(), func(h toolscache.ResourceEventHandler) { h.OnUpdate(old, cur) }}
}

func (l lagging) OnDelete(obj any) {
	l.ch <- lateEvent{time.Now(), func(h toolscache.ResourceEventHandler) { h.OnDelete(obj) }}
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
		Unobserved:  deleteBase,
	})
}

// deleteBase deletes shard's base behind the replicas' backs, and returns what creates it again with the
// data it held.
func deleteBase(t *testing.T, policy types.NamespacedName, shard int) func() {
	t.Helper()
	ctx := context.Background()
	cm := &corev1.ConfigMap{}
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: policy.Namespace, Name: handle(policy).BaseName(shard)}, cm); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	return func() {
		again := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: cm.Namespace, Name: cm.Name, Labels: cm.Labels}, Data: cm.Data}
		if err := env.Client.Create(ctx, again); err != nil {
			t.Fatal(err)
		}
	}
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
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: policy.Namespace, Name: revocation.JournalName(policy.Name)}, cm); err != nil {
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
	req := refresh(policy, revocation.NewSessionID(7), 0)
	req.Shard = 7 // never created
	if _, err := s.Refresh(context.Background(), req); !errors.Is(err, revocation.ErrUnavailable) {
		t.Fatalf("refresh into a missing shard: got %v; want ErrUnavailable", err)
	}
}

// TestRecordsThatDoNotDecodeCannotBeToldValid: a session record, or a subject-wide record, that does not
// decode makes Valid and Current answer ErrUnavailable for that session and that subject only, and a
// fixed record is read again.
func TestRecordsThatDoNotDecodeCannotBeToldValid(t *testing.T) {
	policy := createShards(t, 1)
	s := replica(t, configmap.Options{})
	ctx := context.Background()
	broken, fine := revocation.NewSessionID(0), revocation.NewSessionID(0)
	journal := types.NamespacedName{Namespace: policy.Namespace, Name: revocation.JournalName(policy.Name)}
	edit := func(change func(map[string]string)) {
		t.Helper()
		cm := &corev1.ConfigMap{}
		if err := env.Client.Get(ctx, journal, cm); err != nil {
			t.Fatal(err)
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		change(cm.Data)
		if err := env.Client.Update(ctx, cm); err != nil {
			t.Fatal(err)
		}
	}
	edit(func(data map[string]string) {
		data[revocation.SessionKey(broken)] = "{not json"
		data[revocation.SubjectKey("mallory")] = "{not json"
	})
	tests := []struct {
		name        string
		sid, sub    string
		unavailable bool
	}{
		{"a session whose record does not decode", broken, "alice", true},
		{"a session of a subject whose record does not decode", fine, "mallory", true},
		{"another session of another subject", fine, "alice", false},
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		for _, tt := range tests {
			err := s.Valid(policy, tt.sid, tt.sub, t0)
			if errors.Is(err, revocation.ErrUnavailable) != tt.unavailable || (!tt.unavailable && err != nil) {
				return false, fmt.Sprintf("%s: got %v; want unavailable %v", tt.name, err, tt.unavailable)
			}
		}
		return true, ""
	})
	if cur, err := s.Current(policy, broken, 0); cur || !errors.Is(err, revocation.ErrUnavailable) {
		t.Errorf("Current of the session whose record does not decode: got %v, %v; want ErrUnavailable", cur, err)
	}
	edit(func(data map[string]string) {
		delete(data, revocation.SessionKey(broken))
		delete(data, revocation.SubjectKey("mallory"))
	})
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		for _, tt := range tests {
			if err := s.Valid(policy, tt.sid, tt.sub, t0); err != nil {
				return false, fmt.Sprintf("%s after the fix: got %v; want valid", tt.name, err)
			}
		}
		return true, ""
	})
}

func labelsComponent() labels.Selector {
	return labels.SelectorFromSet(labels.Set{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations})
}

// TestConfigMapStoreConformsWhileSealingAndMerging runs the suite with a journal so small that nearly
// every commit seals it into a segment, while segments are merged into the bases and deleted as fast as
// they come, so that replicas decide while records move under them.
func TestConfigMapStoreConformsWhileSealingAndMerging(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Replicas: func(t *testing.T, n, shards int) (types.NamespacedName, []revocation.Store) {
			policy := createShards(t, shards)
			out := make([]revocation.Store, n)
			for i := range out {
				out[i] = replica(t, configmap.Options{JournalLimit: 1})
			}
			compactContinuously(t, policy)
			return policy, out
		},
		Propagation: 30 * time.Second,
	})
}

// compactContinuously merges policy's segments into its bases, again and again, until the test ends.
func compactContinuously(t *testing.T, policy types.NamespacedName) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	merged := 0
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			res, err := handle(policy).Compact(ctx, env.Client, env.Client, t0)
			if err != nil && ctx.Err() == nil {
				t.Errorf("compact: %v", err)
				return
			}
			merged += res.Segments
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		t.Logf("%d segments merged and deleted during the test", merged)
	})
}

func TestSealsKeepTheJournalSmallAndMergesLoseNothing(t *testing.T) {
	policy := createShards(t, 2)
	reg := prometheus.NewRegistry()
	metrics := configmap.NewMetrics(reg)
	a := replica(t, configmap.Options{JournalLimit: 2048, Metrics: metrics})
	b := replica(t, configmap.Options{JournalLimit: 2048})
	ctx := context.Background()
	const n = 60
	sids := make([]string, n)
	place := func(req revocation.RefreshRequest, i int) revocation.RefreshRequest {
		req.Shard = i % 2
		return req
	}
	for i := range n {
		sids[i] = revocation.NewSessionID(i % 2)
		s := []*configmap.Store{a, b}[i%2]
		if _, err := s.Refresh(ctx, place(refresh(policy, sids[i], 0), i)); err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
	}
	if seals := testutil.ToFloat64(metrics.Seals); seals == 0 {
		t.Fatalf("no seal after %d records in a 2 KiB journal", n)
	}
	objs, err := handle(policy).List(ctx, env.Client)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Segments) == 0 {
		t.Fatal("no sealed segment")
	}
	if size := len(fmt.Sprint(objs.Journal.Data)); size > 2048+1024 {
		t.Fatalf("journal holds %d bytes; want it sealed near its 2 KiB limit", size)
	}
	records := func(objs configmap.Objects) int {
		total, pending := 0, objs.Pending()
		for i, base := range objs.Bases {
			total += revocation.MergedStats(base.Data, pending[i]).Records
		}
		return total
	}
	if got := records(objs); got != n {
		t.Fatalf("records in the journal and segments: %d; want %d", got, n)
	}
	res, err := handle(policy).Compact(ctx, env.Client, env.Client, t0)
	if err != nil || res.Segments < len(objs.Segments) { // a seal may still have been under way (it follows the answer)
		t.Fatalf("compact: %+v, %v; want the %d segments merged", res, err, len(objs.Segments))
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) { // and any seal that followed the last answer
		if objs, err = handle(policy).List(ctx, env.Client); err != nil || len(objs.Segments) > 0 {
			_, _ = handle(policy).Compact(ctx, env.Client, env.Client, t0)
			return false, fmt.Sprintf("%d segments left, %v", len(objs.Segments), err)
		}
		return true, ""
	})
	if len(objs.Segments) != 0 || records(objs) != n || revocation.FoldSeq(objs.Bases[1].Data) != revocation.FoldSeq(objs.Journal.Data) {
		t.Fatalf("after the merge: %d segments, %d records, base fold %d, journal fold %d; want none, %d, equal folds",
			len(objs.Segments), records(objs), revocation.FoldSeq(objs.Bases[1].Data), revocation.FoldSeq(objs.Journal.Data), n)
	}
	// Every session refreshed once is at generation 1 on both replicas: generation 0 is reuse.
	for i := range n {
		s := []*configmap.Store{b, a}[i%2]
		req := place(refresh(policy, sids[i], 1), i)
		req.Now = req.Now.Add(time.Minute)
		if _, err := s.Refresh(ctx, req); err != nil {
			t.Fatalf("second refresh of session %d on the other replica: %v", i, err)
		}
	}
	if _, err := a.Refresh(ctx, place(refresh(policy, sids[0], 0), 0)); !errors.Is(err, revocation.ErrReuse) {
		t.Fatalf("generation 0 of a merged session: got %v; want ErrReuse", err)
	}
}

// TestReplicasAgreeWhileRecordsMove refreshes sessions on replicas chosen in turn, with a journal sealed
// every few records and segments merged and deleted continuously: every refresh of the current generation
// must succeed on whichever replica gets it, and a replay of an older one must be caught as reuse, however
// far the record has moved (journal, segment, base) and however late a replica's informer is.
func TestReplicasAgreeWhileRecordsMove(t *testing.T) {
	policy := createShards(t, 2)
	replicas := []*configmap.Store{
		replica(t, configmap.Options{JournalLimit: 512}),
		replicaLagging(t, configmap.Options{JournalLimit: 512}, 200*time.Millisecond),
		replicaLagging(t, configmap.Options{JournalLimit: 512}, time.Second),
	}
	compactContinuously(t, policy)
	ctx := context.Background()
	const sessions, rounds = 24, 6
	errs := make(chan error, sessions)
	for i := range sessions {
		go func() {
			sid := revocation.NewSessionID(i % 2)
			req := refresh(policy, sid, 0)
			req.Shard = i % 2
			for g := range uint64(rounds) {
				req.Generation, req.Now = g, req.Now.Add(time.Second)
				if _, err := replicas[(i+int(g))%3].Refresh(ctx, req); err != nil {
					errs <- fmt.Errorf("session %d, generation %d: %w", i, g, err)
					return
				}
			}
			req.Generation, req.Now = uint64(i%rounds), req.Now.Add(time.Second)
			if _, err := replicas[i%3].Refresh(ctx, req); !errors.Is(err, revocation.ErrReuse) {
				errs <- fmt.Errorf("session %d, replay of generation %d: got %v; want ErrReuse", i, req.Generation, err)
				return
			}
			errs <- nil
		}()
	}
	for range sessions {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestWithoutMergesTheJournalFailsClosedThenRecovers: while the controller merges nothing, sealing stops at
// MaxSegmentBytes and the journal grows to its bound (MinJournalBound here); then decisions that would grow it
// fail closed (no token without a durable record), and the first merge lets everything proceed.
func TestWithoutMergesTheJournalFailsClosedThenRecovers(t *testing.T) {
	policy := createShards(t, 1)
	s := replica(t, configmap.Options{JournalLimit: 64, MaxSegmentBytes: 1})
	ctx := context.Background()
	var refused error
	for i := 0; i < 2000 && refused == nil; i++ {
		_, refused = s.Refresh(ctx, refresh(policy, revocation.NewSessionID(0), 0))
	}
	if !errors.Is(refused, revocation.ErrUnavailable) || !strings.Contains(refused.Error(), "wait for the controller to merge") {
		t.Fatalf("refreshes with merges stopped: got %v; want ErrUnavailable naming the merges", refused)
	}
	objs, err := handle(policy).List(ctx, env.Client)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Segments) != 1 || len(fmt.Sprint(objs.Journal.Data)) > configmap.MinJournalBound+1024 {
		t.Fatalf("%d segments, journal of %d bytes; want one segment, then a journal grown to its bound", len(objs.Segments), len(fmt.Sprint(objs.Journal.Data)))
	}
	if _, err := handle(policy).Compact(ctx, env.Client, env.Client, t0); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		_, err := s.Refresh(ctx, refresh(policy, revocation.NewSessionID(0), 0))
		return err == nil, fmt.Sprint("refresh after the merge: ", err)
	})
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

package controllers

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// shardNames are the names of the policy's shard bases, without its object prefix.
func (f *fixture) shardNames(policy string) []string {
	f.t.Helper()
	h := f.handle(policy)
	objs, err := h.List(context.Background(), env.Client)
	if err != nil {
		f.t.Fatal(err)
	}
	if objs.Journal == nil {
		f.t.Fatalf("policy %s has no journal", policy)
	}
	var names []string
	for _, i := range slices.Sorted(maps.Keys(objs.Bases)) {
		names = append(names, strings.TrimPrefix(objs.Bases[i].Name, h.Key.Name+"-"))
	}
	return names
}

// records is a shard's data as the issuer sees it: its base (named shard, in the issuer's namespace), and
// its entries in the journal and segments.
func (f *fixture) records(shard string) map[string]string {
	f.t.Helper()
	prefix := shard[:strings.LastIndex(shard, "-revocations-")]
	h := configmap.Policy{Key: types.NamespacedName{Namespace: f.issuerNS, Name: prefix}}
	objs, err := h.List(context.Background(), env.Client)
	if err != nil {
		f.t.Fatal(err)
	}
	_, i := revocation.RoleOf(prefix, shard)
	out := map[string]string{}
	for k, v := range objs.Bases[int(i)].Data {
		out[k] = v
	}
	for k, v := range objs.Pending()[int(i)] {
		out[k] = revocation.Newer(k, out[k], v)
	}
	return out
}

func (f *fixture) setShards(name string, n int32) {
	f.t.Helper()
	p := f.get(name)
	p.Spec.Revocation.Shards = n
	if err := env.Client.Update(context.Background(), p); err != nil {
		f.t.Fatalf("set shards to %d: %v", n, err)
	}
}

func TestShardsFollowTheShardCountAndDrainBeforeDeletion(t *testing.T) {
	f := newFixture(t)
	p := f.policy("sharded", func(s *v1alpha1.TokenPolicySpec) { s.Revocation.Shards = 2 })
	f.reconcile("sharded")
	if got := strings.Join(f.shardNames("sharded"), ","); got != "revocations-0,revocations-1" {
		t.Fatalf("shards: got %s; want two", got)
	}
	cm := f.materialised("sharded", "revocations-1")
	if cm.Labels[v1alpha1.LabelPolicy] != p.Name || cm.Labels[v1alpha1.LabelPolicyNamespace] != p.Namespace || len(cm.OwnerReferences) != 0 {
		t.Errorf("shard labels %v, owner references %v; want the policy named in labels, and no owner across namespaces", cm.Labels, cm.OwnerReferences)
	}

	f.setShards("sharded", 4)
	f.reconcile("sharded")
	if got := len(f.shardNames("sharded")); got != 4 {
		t.Fatalf("after raising to 4: %d shards; want 4", got)
	}

	// Lowering the count to 1 moves nothing and deletes nothing yet: sessions placed in shards 1-3 live on.
	shard3 := f.materialised("sharded", "revocations-3")
	rec := revocation.Session{Subject: "alice", Generation: 2, Rotated: f.clock.Now(), Expiry: f.clock.Now().Add(200 * time.Hour), State: revocation.Revoked, Reason: revocation.ReasonLogout}
	shard3.Data = map[string]string{revocation.SessionKey("sid-1"): revocation.EncodeSession(rec)}
	if err := env.Client.Update(context.Background(), shard3); err != nil {
		t.Fatal(err)
	}
	f.setShards("sharded", 1)
	res := f.reconcile("sharded")
	if got := len(f.shardNames("sharded")); got != 4 {
		t.Fatalf("right after lowering to 1: %d shards; want all 4 kept while their sessions may live", got)
	}
	if since := f.materialised("sharded", "revocations-2").Annotations[v1alpha1.AnnotationSurplusSince]; since == "" {
		t.Fatalf("surplus shard 2 has no %s mark", v1alpha1.AnnotationSurplusSince)
	}
	if f.materialised("sharded", "revocations-0").Annotations[v1alpha1.AnnotationSurplusSince] != "" {
		t.Fatalf("shard 0 is within the count but marked surplus")
	}
	st := f.get("sharded").Status
	if len(st.Shards) != 4 || st.Shards[3].Name != f.handle("sharded").BaseName(3) || st.Shards[3].Records != 1 || st.Shards[3].RevokedSessions != 1 || st.Shards[3].Bytes == 0 {
		t.Fatalf("status.shards: got %+v; want shard 3 with one revoked record", st.Shards)
	}
	if st.RevokedSessions == nil || *st.RevokedSessions != 1 {
		t.Fatalf("status.revokedSessions: got %v; want 1", st.RevokedSessions)
	}
	if want := 168*time.Hour + RetirementLeeway; res.RequeueAfter != want {
		t.Fatalf("requeue after %s; want %s, when the surplus shards may go", res.RequeueAfter, want)
	}

	// One refresh lifetime later the empty surplus shards go; shard 3 stays while it holds a record.
	f.clock.Step(res.RequeueAfter)
	f.reconcile("sharded")
	if got := strings.Join(f.shardNames("sharded"), ","); got != "revocations-0,revocations-3" {
		t.Fatalf("after a refresh lifetime: shards %s; want 0 and the non-empty 3", got)
	}
	shard3 = f.materialised("sharded", "revocations-3")
	shard3.Data = nil
	if err := env.Client.Update(context.Background(), shard3); err != nil {
		t.Fatal(err)
	}
	f.reconcile("sharded")
	if got := strings.Join(f.shardNames("sharded"), ","); got != "revocations-0" {
		t.Fatalf("after draining: shards %s; want only 0", got)
	}

	// Raising the count again takes a surplus shard back: its mark goes.
	f.setShards("sharded", 2)
	f.reconcile("sharded")
	if got := len(f.shardNames("sharded")); got != 2 {
		t.Fatalf("after raising to 2: %d shards; want 2", got)
	}
}

func TestAShardNearItsBudgetTurnsRevocationStoreReadyFalse(t *testing.T) {
	f := newFixture(t)
	f.r.Revocations.Budget = 1000
	f.policy("tight", func(s *v1alpha1.TokenPolicySpec) { s.Revocation.Shards = 1 })
	f.reconcile("tight")
	cm := f.materialised("tight", "revocations-0")
	cm.Data = map[string]string{}
	for i := 0; len(cm.Data) < 10; i++ {
		rec := revocation.Session{Subject: "alice", Generation: uint64(i), Rotated: f.clock.Now(), Expiry: f.clock.Now().Add(time.Hour), State: revocation.Active}
		cm.Data[revocation.SessionKey("session-"+string(rune('a'+i)))] = revocation.EncodeSession(rec)
	}
	if err := env.Client.Update(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	f.reconcile("tight")
	p := f.get("tight")
	c := findCondition(p, v1alpha1.ConditionRevocationStoreReady)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonShardNearBudget || !strings.Contains(c.Message, f.handle("tight").BaseName(0)) {
		t.Fatalf("RevocationStoreReady: got %+v; want False, %s, naming the shard", c, v1alpha1.ReasonShardNearBudget)
	}
	if r := findCondition(p, v1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionFalse {
		t.Fatalf("Ready: got %+v; want False", r)
	}
}

func TestExpiredRecordsAreDroppedAndTheNextExpiryIsScheduled(t *testing.T) {
	f := newFixture(t)
	f.r.IssuerURL = "https://issuer.example.com"
	f.policy("expiring", func(s *v1alpha1.TokenPolicySpec) {
		s.Revocation.Shards = 1
		s.Signing.RotationInterval = &metav1.Duration{}
	})
	f.reconcile("expiring")
	now := f.clock.Now()
	cm := f.materialised("expiring", "revocations-0")
	cm.Data = map[string]string{
		revocation.SessionKey("gone"):  revocation.EncodeSession(revocation.Session{Subject: "a", Generation: 1, Rotated: now, Expiry: now.Add(time.Minute), State: revocation.Active}),
		revocation.SessionKey("kept"):  revocation.EncodeSession(revocation.Session{Subject: "b", Generation: 1, Rotated: now, Expiry: now.Add(time.Hour), State: revocation.Revoked}),
		revocation.SubjectKey("carol"): revocation.EncodeSubject(revocation.Subject{Subject: "carol", RevokedBefore: now, Expiry: now.Add(30 * time.Minute)}),
	}
	if err := env.Client.Update(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	if res := f.reconcile("expiring"); res.RequeueAfter != time.Minute {
		t.Fatalf("requeue after %s; want 1m, when the first record expires", res.RequeueAfter)
	}
	f.clock.Step(time.Minute)
	if res := f.reconcile("expiring"); res.RequeueAfter != 29*time.Minute {
		t.Fatalf("requeue after %s; want 29m, when the subject record expires", res.RequeueAfter)
	}
	data := f.materialised("expiring", "revocations-0").Data
	if _, ok := data[revocation.SessionKey("gone")]; ok || len(data) != 2 {
		t.Fatalf("shard after the first expiry: %v; want the expired session dropped and two records kept", data)
	}
	if st := f.get("expiring").Status.Shards[0]; st.Records != 2 || st.RevokedSessions != 1 {
		t.Fatalf("shard status: %+v; want 2 records, 1 revoked", st)
	}
}

func TestShardWritesDoNotTriggerReconcilesButTheFillIsReadPeriodically(t *testing.T) {
	shard := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}}}
	jwks := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{v1alpha1.LabelComponent: v1alpha1.ComponentJWKS}}}
	segment := shard.DeepCopy()
	segment.Name, segment.Labels[v1alpha1.LabelRevocationRole] = revocation.SegmentName("p", 3), v1alpha1.RevocationRoleSegment
	if ignoreShardWrites.Update(event.UpdateEvent{ObjectOld: shard, ObjectNew: shard}) {
		t.Errorf("a shard update triggers a reconcile; want it ignored")
	}
	if !ignoreShardWrites.Update(event.UpdateEvent{ObjectOld: jwks, ObjectNew: jwks}) {
		t.Errorf("a JWKS update is ignored; want it to trigger a reconcile (someone edited what the controller owns)")
	}
	if !ignoreShardWrites.Delete(event.DeleteEvent{Object: shard}) || !ignoreShardWrites.Create(event.CreateEvent{Object: shard}) {
		t.Errorf("a shard's creation or deletion is ignored; want it to trigger a reconcile")
	}
	if ignoreShardWrites.Create(event.CreateEvent{Object: segment}) || ignoreShardWrites.Delete(event.DeleteEvent{Object: segment}) {
		t.Errorf("a sealed segment's creation or deletion triggers a reconcile at once; want it left to the delayed handler")
	}
	f := newFixture(t)
	f.r.ShardStatusPeriod = 10 * time.Second
	f.policy("periodic", func(s *v1alpha1.TokenPolicySpec) { s.Signing.RotationInterval = &metav1.Duration{} })
	if res := f.reconcile("periodic"); res.RequeueAfter != 10*time.Second {
		t.Fatalf("requeue after %s; want the shard status period, 10s", res.RequeueAfter)
	}
}

func TestSealedSegmentsAreMergedIntoTheBasesOnceTheyHoldEnough(t *testing.T) {
	f := newFixture(t)
	f.r.Revocations.CompactBytes = 400
	f.policy("merging", func(s *v1alpha1.TokenPolicySpec) { s.Revocation.Shards = 2 })
	f.reconcile("merging")
	journal := f.materialised("merging", "revocations-journal")
	h := f.handle("merging")
	now := f.clock.Now()
	seal := func(seq uint64, sids ...string) {
		t.Helper()
		labels := map[string]string{v1alpha1.LabelRevocationRole: v1alpha1.RevocationRoleSegment}
		for k, v := range journal.Labels {
			labels[k] = v
		}
		seg := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: f.issuerNS, Name: h.SegmentName(seq), Labels: labels},
			Data: map[string]string{}}
		for _, sid := range sids {
			seg.Data[revocation.SessionKey(sid)] = revocation.EncodeSession(revocation.Session{Subject: "alice", Generation: seq,
				Rotated: now, Expiry: now.Add(time.Hour), State: revocation.Active})
		}
		if err := env.Client.Create(context.Background(), seg); err != nil {
			t.Fatal(err)
		}
	}
	a, b := revocation.NewSessionID(0), revocation.NewSessionID(1)
	seal(1, a, b)

	// Below the threshold the segment stays, and the status counts its records in their shards.
	f.reconcile("merging")
	if cm := f.materialised("merging", "revocations-seg-1"); len(cm.Data) != 2 {
		t.Fatalf("segment 1 holds %d entries; want it kept with 2", len(cm.Data))
	}
	if st := f.get("merging").Status.Shards; len(st) != 2 || st[0].Records != 1 || st[1].Records != 1 {
		t.Fatalf("status.shards %+v; want one record in each shard", st)
	}

	seal(2, a)
	seal(3, a)
	f.reconcile("merging")
	objs, err := h.List(context.Background(), env.Client)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Segments) != 0 {
		t.Fatalf("segments left after the merge: %d; want none", len(objs.Segments))
	}
	if got := revocation.FoldSeq(objs.Journal.Data); got != 3 {
		t.Fatalf("journal fold number %d; want 3, so that no segment up to 3 is sealed again", got)
	}
	for i, sid := range []string{a, b} {
		base := objs.Bases[i]
		rec, err := revocation.DecodeSession(base.Data[revocation.SessionKey(sid)])
		if err != nil || revocation.FoldSeq(base.Data) != 3 {
			t.Fatalf("base %d: record %v, fold %d; want the session and fold number 3", i, err, revocation.FoldSeq(base.Data))
		}
		if want := uint64(3 - 2*i); rec.Generation != want {
			t.Fatalf("session in base %d at generation %d; want %d, the newest sealed", i, rec.Generation, want)
		}
	}
}

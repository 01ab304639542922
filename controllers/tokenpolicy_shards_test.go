package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

func (f *fixture) shardNames(policy string) []string {
	f.t.Helper()
	var list corev1.ConfigMapList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(f.ns),
		client.MatchingLabels{v1alpha1.LabelPolicy: policy, v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}); err != nil {
		f.t.Fatal(err)
	}
	var names, journals []string
	for _, cm := range list.Items {
		if strings.HasSuffix(cm.Name, revocation.JournalSuffix) {
			journals = append(journals, strings.TrimSuffix(cm.Name, revocation.JournalSuffix))
		} else {
			names = append(names, cm.Name)
		}
	}
	if strings.Join(names, ",") != strings.Join(journals, ",") {
		f.t.Fatalf("shard bases %v and journals %v do not pair up", names, journals)
	}
	return names
}

// records is a shard's data as the issuer sees it: its base and its journal merged.
func (f *fixture) records(shard string) map[string]string {
	f.t.Helper()
	out := map[string]string{}
	for k, v := range f.configMap(shard).Data {
		out[k] = v
	}
	for k, v := range f.configMap(shard + revocation.JournalSuffix).Data {
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
	if got := strings.Join(f.shardNames("sharded"), ","); got != "sharded-revocations-0,sharded-revocations-1" {
		t.Fatalf("shards: got %s; want two", got)
	}
	cm := f.configMap("sharded-revocations-1")
	if !metav1.IsControlledBy(cm, p) {
		t.Errorf("shard owner references %v; want the policy as controller", cm.OwnerReferences)
	}

	f.setShards("sharded", 4)
	f.reconcile("sharded")
	if got := len(f.shardNames("sharded")); got != 4 {
		t.Fatalf("after raising to 4: %d shards; want 4", got)
	}

	// Lowering the count to 1 moves nothing and deletes nothing yet: sessions placed in shards 1-3 live on.
	shard3 := f.configMap("sharded-revocations-3")
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
	if since := f.configMap("sharded-revocations-2").Annotations[v1alpha1.AnnotationSurplusSince]; since == "" {
		t.Fatalf("surplus shard 2 has no %s mark", v1alpha1.AnnotationSurplusSince)
	}
	if f.configMap("sharded-revocations-0").Annotations[v1alpha1.AnnotationSurplusSince] != "" {
		t.Fatalf("shard 0 is within the count but marked surplus")
	}
	st := f.get("sharded").Status
	if len(st.Shards) != 4 || st.Shards[3].Name != "sharded-revocations-3" || st.Shards[3].Records != 1 || st.Shards[3].RevokedSessions != 1 || st.Shards[3].Bytes == 0 {
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
	if got := strings.Join(f.shardNames("sharded"), ","); got != "sharded-revocations-0,sharded-revocations-3" {
		t.Fatalf("after a refresh lifetime: shards %s; want 0 and the non-empty 3", got)
	}
	shard3 = f.configMap("sharded-revocations-3")
	shard3.Data = nil
	if err := env.Client.Update(context.Background(), shard3); err != nil {
		t.Fatal(err)
	}
	f.reconcile("sharded")
	if got := strings.Join(f.shardNames("sharded"), ","); got != "sharded-revocations-0" {
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
	f.r.ShardBudget = 1000
	f.policy("tight", func(s *v1alpha1.TokenPolicySpec) { s.Revocation.Shards = 1 })
	f.reconcile("tight")
	cm := f.configMap("tight-revocations-0")
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
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonShardNearBudget || !strings.Contains(c.Message, "tight-revocations-0") {
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
	cm := f.configMap("expiring-revocations-0")
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
	data := f.configMap("expiring-revocations-0").Data
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
	if ignoreShardUpdates.Update(event.UpdateEvent{ObjectOld: shard, ObjectNew: shard}) {
		t.Errorf("a shard update triggers a reconcile; want it ignored")
	}
	if !ignoreShardUpdates.Update(event.UpdateEvent{ObjectOld: jwks, ObjectNew: jwks}) {
		t.Errorf("a JWKS update is ignored; want it to trigger a reconcile (someone edited what the controller owns)")
	}
	if !ignoreShardUpdates.Delete(event.DeleteEvent{Object: shard}) || !ignoreShardUpdates.Create(event.CreateEvent{Object: shard}) {
		t.Errorf("a shard's creation or deletion is ignored; want it to trigger a reconcile")
	}
	f := newFixture(t)
	f.r.ShardStatusPeriod = 10 * time.Second
	f.policy("periodic", func(s *v1alpha1.TokenPolicySpec) { s.Signing.RotationInterval = &metav1.Duration{} })
	if res := f.reconcile("periodic"); res.RequeueAfter != 10*time.Second {
		t.Fatalf("requeue after %s; want the shard status period, 10s", res.RequeueAfter)
	}
}

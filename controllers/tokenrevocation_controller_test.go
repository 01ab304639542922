package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

func (f *fixture) revocations() *TokenRevocationReconciler {
	return &TokenRevocationReconciler{Client: env.Client, Recorder: events.NewFakeRecorder(10), Clock: f.clock,
		IssuerNamespace: f.issuerNS, Revocations: f.r.Revocations}
}

func (f *fixture) tokenRevocation(name string, spec v1alpha1.TokenRevocationSpec) {
	f.t.Helper()
	tr := &v1alpha1.TokenRevocation{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name}, Spec: spec}
	if err := env.Client.Create(context.Background(), tr); err != nil {
		f.t.Fatalf("create TokenRevocation %s: %v", name, err)
	}
}

func (f *fixture) getRevocation(name string) *v1alpha1.TokenRevocation {
	f.t.Helper()
	tr := &v1alpha1.TokenRevocation{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: name}, tr); err != nil {
		f.t.Fatal(err)
	}
	return tr
}

func appliedIs(tr *v1alpha1.TokenRevocation, status metav1.ConditionStatus, reason string) bool {
	for _, c := range tr.Status.Conditions {
		if c.Type == v1alpha1.ConditionApplied {
			return c.Status == status && c.Reason == reason
		}
	}
	return false
}

func TestATokenRevocationOfASessionEndsItsRefreshes(t *testing.T) {
	f := newFixture(t)
	f.policy("payments", func(s *v1alpha1.TokenPolicySpec) { s.Revocation.Shards = 4 })
	f.reconcile("payments")
	store := configmap.New(env.Client, env.Client, configmap.Options{})
	h := f.handle("payments")
	policy := h.Key
	sid := revocation.NewSessionID(2)
	shard, _ := revocation.ShardOfSession(sid)
	req := revocation.RefreshRequest{Place: revocation.Place{Policy: policy, Shard: shard}, SessionID: sid, Subject: "alice",
		AuthTime: f.clock.Now(), Expiry: f.clock.Now().Add(time.Hour), Now: f.clock.Now()}
	if _, err := store.Refresh(context.Background(), req); err != nil {
		t.Fatalf("refresh before the revocation: %v", err)
	}

	f.tokenRevocation("stolen-laptop", v1alpha1.TokenRevocationSpec{PolicyName: "payments", SessionID: sid, Reason: "laptop stolen"})
	r := f.revocations()
	if _, err := r.Reconcile(context.Background(), reconcileRequest(f.ns, "stolen-laptop")); err != nil {
		t.Fatal(err)
	}
	tr := f.getRevocation("stolen-laptop")
	if !appliedIs(tr, metav1.ConditionTrue, v1alpha1.ReasonApplied) || tr.Status.AppliedAt == nil || tr.Status.Target != "session "+sid || tr.Status.Shard != h.BaseName(2) {
		t.Fatalf("status: %+v; want Applied True with time, target and shard", tr.Status)
	}
	rec, err := revocation.DecodeSession(f.records(h.BaseName(2))[revocation.SessionKey(sid)])
	if err != nil || rec.State != revocation.Revoked || rec.Reason != "laptop stolen" || rec.Subject != "alice" {
		t.Fatalf("record: %+v, %v; want alice's session revoked for the stated reason", rec, err)
	}
	req.Generation, req.Now = 1, f.clock.Now().Add(time.Minute)
	if _, err := store.Refresh(context.Background(), req); !errors.Is(err, revocation.ErrRevoked) {
		t.Fatalf("refresh after the revocation: got %v; want ErrRevoked", err)
	}
	// Applied once is applied for good: another pass writes nothing.
	before := f.materialised("payments", "revocations-journal").ResourceVersion
	if _, err := r.Reconcile(context.Background(), reconcileRequest(f.ns, "stolen-laptop")); err != nil {
		t.Fatal(err)
	}
	if after := f.materialised("payments", "revocations-journal").ResourceVersion; after != before {
		t.Fatalf("a second pass rewrote the shard")
	}
}

func TestATokenRevocationOfASubjectIsOneRecord(t *testing.T) {
	f := newFixture(t)
	f.policy("payments", nil)
	f.reconcile("payments")
	f.tokenRevocation("offboard-bob", v1alpha1.TokenRevocationSpec{PolicyName: "payments", Subject: "system:serviceaccount:team-a:bob"})
	if _, err := f.revocations().Reconcile(context.Background(), reconcileRequest(f.ns, "offboard-bob")); err != nil {
		t.Fatal(err)
	}
	tr := f.getRevocation("offboard-bob")
	if !appliedIs(tr, metav1.ConditionTrue, v1alpha1.ReasonApplied) {
		t.Fatalf("status %+v; want Applied", tr.Status)
	}
	data := f.records(tr.Status.Shard)
	sub, err := revocation.DecodeSubject(data[revocation.SubjectKey("system:serviceaccount:team-a:bob")])
	if err != nil || len(data) != 1 || !sub.RevokedBefore.Equal(tr.CreationTimestamp.Add(time.Second)) {
		t.Fatalf("shard %s: %v; want one subject record revoking logins up to the end of its creation second %v", tr.Status.Shard, data, tr.CreationTimestamp)
	}
}

func TestATokenRevocationWaitsForItsPolicy(t *testing.T) {
	f := newFixture(t)
	f.tokenRevocation("early", v1alpha1.TokenRevocationSpec{PolicyName: "later", Subject: "alice"})
	r := f.revocations()
	if _, err := r.Reconcile(context.Background(), reconcileRequest(f.ns, "early")); err != nil {
		t.Fatalf("reconcile without the policy: %v; want no error (the policy watch brings it back)", err)
	}
	if tr := f.getRevocation("early"); !appliedIs(tr, metav1.ConditionFalse, v1alpha1.ReasonPolicyNotFound) {
		t.Fatalf("status %+v; want Applied False, %s", tr.Status, v1alpha1.ReasonPolicyNotFound)
	}
	f.policy("later", nil)
	f.reconcile("later")
	if got := r.revocationsForPolicy(context.Background(), f.get("later")); len(got) != 1 || got[0].Name != "early" {
		t.Fatalf("requests for the new policy: %v; want the waiting revocation", got)
	}
	if _, err := r.Reconcile(context.Background(), reconcileRequest(f.ns, "early")); err != nil {
		t.Fatal(err)
	}
	if tr := f.getRevocation("early"); !appliedIs(tr, metav1.ConditionTrue, v1alpha1.ReasonApplied) {
		t.Fatalf("status %+v; want Applied", tr.Status)
	}
}

func TestTheAPIServerRefusesInvalidTokenRevocations(t *testing.T) {
	f := newFixture(t)
	tests := map[string]struct {
		spec v1alpha1.TokenRevocationSpec
		want string
	}{
		"neither subject nor session":   {v1alpha1.TokenRevocationSpec{PolicyName: "p"}, "set exactly one of subject and sessionID"},
		"both subject and session":      {v1alpha1.TokenRevocationSpec{PolicyName: "p", Subject: "a", SessionID: revocation.NewSessionID(0)}, "set exactly one of subject and sessionID"},
		"a session id of another shape": {v1alpha1.TokenRevocationSpec{PolicyName: "p", SessionID: "abc"}, "spec.sessionID"},
		"no policy":                     {v1alpha1.TokenRevocationSpec{Subject: "a"}, "spec.policyName"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tr := &v1alpha1.TokenRevocation{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, GenerateName: "bad-"}, Spec: tc.spec}
			err := env.Client.Create(context.Background(), tr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want an error containing %q", err, tc.want)
			}
		})
	}
	f.tokenRevocation("fixed", v1alpha1.TokenRevocationSpec{PolicyName: "p", Subject: "a"})
	tr := f.getRevocation("fixed")
	tr.Spec.Subject = "b"
	if err := env.Client.Update(context.Background(), tr); err == nil || !strings.Contains(err.Error(), "cannot be changed") {
		t.Fatalf("changing a TokenRevocation: got %v; want it refused", err)
	}
}

// TestLoweringTheRefreshLifetimeDoesNotReviveARevokedSession: sessions issued with a 2h lifetime live 2h,
// whatever the policy says later; an operator's revocations made after the lifetime was lowered to 1h last
// as long as those sessions can, and are dropped only once they have all ended.
func TestLoweringTheRefreshLifetimeDoesNotReviveARevokedSession(t *testing.T) {
	f := newFixture(t)
	f.policy("payments", func(s *v1alpha1.TokenPolicySpec) {
		s.RefreshToken.Lifetime = metav1.Duration{Duration: 2 * time.Hour}
		s.Signing.RotationInterval = &metav1.Duration{}
	})
	f.reconcile("payments")
	p := f.get("payments")
	p.Spec.RefreshToken.Lifetime = metav1.Duration{Duration: time.Hour}
	if err := env.Client.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	f.reconcile("payments")

	sid := revocation.NewSessionID(1)
	f.tokenRevocation("by-id", v1alpha1.TokenRevocationSpec{PolicyName: "payments", SessionID: sid})
	f.tokenRevocation("by-subject", v1alpha1.TokenRevocationSpec{PolicyName: "payments", Subject: "bob"})
	r := f.revocations()
	for _, name := range []string{"by-id", "by-subject"} {
		if _, err := r.Reconcile(context.Background(), reconcileRequest(f.ns, name)); err != nil {
			t.Fatal(err)
		}
	}
	h := f.handle("payments")
	present := func() (session, subject bool) {
		for i := range 4 {
			recs := f.records(h.BaseName(i))
			_, s := recs[revocation.SessionKey(sid)]
			_, u := recs[revocation.SubjectKey("bob")]
			session, subject = session || s, subject || u
		}
		return session, subject
	}
	// Past the new lifetime, not past the old one: the sessions may live, so must their revocations.
	f.clock.Step(90 * time.Minute)
	f.reconcile("payments")
	if session, subject := present(); !session || !subject {
		t.Fatalf("records 90 minutes after, with a 1h lifetime but sessions of 2h alive: session %v, subject %v; want both kept", session, subject)
	}
	// Past the old lifetime too: every session it could revoke has ended. (The subject mark counts from
	// the TokenRevocation's creationTimestamp, which the API server sets from its own clock, not the test's.)
	f.clock.Step(45 * time.Minute)
	f.reconcile("payments")
	if session, _ := present(); session {
		t.Fatalf("the session's record once every session of the old lifetime has ended: kept; want it dropped")
	}
}

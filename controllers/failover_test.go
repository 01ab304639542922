package controllers

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// startElected runs a controller replica with leader election, as the Deployment's two replicas do; the
// returned stop ends it without releasing the Lease, as a crash would.
func startElected(t *testing.T, leaseNS string) (stop func(), elected <-chan struct{}) {
	t.Helper()
	lease, renew, retry := 3*time.Second, 2*time.Second, 200*time.Millisecond
	return runManager(t, ctrl.Options{LeaderElection: true, LeaderElectionID: "tokenwarden-controller", LeaderElectionNamespace: leaseNS,
		LeaseDuration: &lease, RenewDeadline: &renew, RetryPeriod: &retry}, leaseNS)
}

func TestALeaderFailoverLosesNothingAndResumesReconciling(t *testing.T) {
	ns := env.Namespace(t)
	stopA, electedA := startElected(t, ns)
	<-electedA // A leads; B waits
	_, electedB := startElected(t, ns)
	holder := func() string {
		t.Helper()
		lease := &coordinationv1.Lease{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "tokenwarden-controller"}, lease); err != nil {
			t.Fatalf("leader Lease: %v", err)
		}
		return ptr.Deref(lease.Spec.HolderIdentity, "")
	}
	first := holder()

	ready := func(name string) *v1alpha1.TokenPolicy {
		t.Helper()
		p := &v1alpha1.TokenPolicy{}
		testenv.Eventually(t, 60*time.Second, func() (bool, string) {
			if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, p); err != nil {
				return false, err.Error()
			}
			return meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady), "policy " + name + " not Ready"
		})
		return p
	}
	create := func(name string) {
		t.Helper()
		if err := env.Client.Create(context.Background(), &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: v1alpha1.TokenPolicySpec{Audiences: []string{"api"}}}); err != nil {
			t.Fatal(err)
		}
	}
	create("before")
	before := ready("before")
	select {
	case <-electedB:
		t.Fatal("the second replica was elected while the first still led")
	default:
	}

	stopA() // a crash: the Lease is not released, the other replica takes it when it expires
	select {
	case <-electedB:
	case <-time.After(60 * time.Second):
		t.Fatal("the second replica was not elected within 60s of the leader's crash")
	}
	if now := holder(); now == "" || now == first {
		t.Fatalf("the Lease is held by %q after failover; want the second replica, not %q", now, first)
	}
	create("after")
	ready("after")

	// The new leader reconciled the old policy again and kept its key: nothing was regenerated or lost.
	again := ready("before")
	if again.Status.ActiveKeyID != before.Status.ActiveKeyID {
		t.Fatalf("after failover the active key of an existing policy changed from %s to %s", before.Status.ActiveKeyID, again.Status.ActiveKeyID)
	}
}

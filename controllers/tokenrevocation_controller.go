package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// TokenRevocationReconciler records each TokenRevocation in its policy's revocation objects, through the
// same shard-writing code and the same rules the issuer uses.
type TokenRevocationReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Clock    clock.PassiveClock
	// IssuerNamespace is where the policies' revocation objects are.
	IssuerNamespace string
	// Revocations writes to them.
	Revocations *configmap.Keeper
}

// +kubebuilder:rbac:groups=tokenwarden.io,resources=tokenrevocations,verbs=get;list;watch
// +kubebuilder:rbac:groups=tokenwarden.io,resources=tokenrevocations/status,verbs=get;update;patch

// Reconcile applies one TokenRevocation, once.
func (r *TokenRevocationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tr := &v1alpha1.TokenRevocation{}
	if err := r.Client.Get(ctx, req.NamespacedName, tr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if meta.IsStatusConditionTrue(tr.Status.Conditions, v1alpha1.ConditionApplied) {
		return ctrl.Result{}, nil // the spec is immutable: applied once is applied for good
	}
	policy := &v1alpha1.TokenPolicy{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: tr.Namespace, Name: tr.Spec.PolicyName}, policy)
	if isNotFound(err) {
		// Not an error to retry: creating the policy triggers a new pass through the policy watch.
		return ctrl.Result{}, r.setApplied(ctx, tr, metav1.ConditionFalse, v1alpha1.ReasonPolicyNotFound,
			fmt.Sprintf("TokenPolicy %s does not exist in namespace %s", tr.Spec.PolicyName, tr.Namespace), "", "")
	}
	if err != nil {
		return ctrl.Result{}, wrapf(err, "get policy %s", tr.Spec.PolicyName)
	}

	now := r.Clock.Now()
	h := configmap.For(policy, r.IssuerNamespace)
	// The sessions revoked may have been issued with a longer lifetime than the policy's now: the record
	// lasts as long as they can.
	lifetime, err := r.Revocations.LongestLifetime(ctx, h, policy.Spec.RefreshToken.Lifetime.Duration, r.Clock.Now())
	if err != nil {
		return ctrl.Result{}, err // the journal may not exist yet: retry
	}
	var target, shard string
	if tr.Spec.SessionID != "" {
		i, ok := revocation.ShardOfSession(tr.Spec.SessionID)
		if !ok {
			return ctrl.Result{}, r.setApplied(ctx, tr, metav1.ConditionFalse, v1alpha1.ReasonInvalidSessionID,
				fmt.Sprintf("%q is not a session id this issuer made", tr.Spec.SessionID), "", "")
		}
		target = "session " + tr.Spec.SessionID
		// Without a record the session's end is unknown; it is at most one refresh lifetime away.
		shard, err = r.Revocations.RevokeSession(ctx, h, revocation.RevokeSessionRequest{Place: revocation.Place{Policy: h.Key, Shard: i},
			SessionID: tr.Spec.SessionID, Expiry: now.Add(lifetime + configmap.RetirementLeeway), Reason: reasonOf(tr), Now: now})
	} else {
		// Every session that logged in before the TokenRevocation was created ends at most one refresh
		// lifetime after it; the mark is kept that long. creationTimestamp has whole seconds: the revocation
		// happened within the second after it, so the mark covers that whole second (a login in the same
		// second is revoked too, on the safe side).
		before := tr.CreationTimestamp.Add(time.Second)
		target = "subject " + tr.Spec.Subject
		shard, err = r.Revocations.RevokeSubject(ctx, h, revocation.RevokeSubjectRequest{
			Place:   revocation.Place{Policy: h.Key, Shard: revocation.ShardOf(tr.Spec.Subject, int(policy.Spec.Revocation.Shards))},
			Subject: tr.Spec.Subject, Before: before, Expiry: before.Add(lifetime + configmap.RetirementLeeway), Reason: reasonOf(tr)})
	}
	if err != nil {
		return ctrl.Result{}, wrapf(err, "record revocation of %s", target) // the objects may not exist yet: retry
	}
	r.Recorder.Eventf(tr, policy, corev1.EventTypeNormal, v1alpha1.EventRevocationApplied, "Revoke", "Revoked %s of TokenPolicy %s: %s", target, policy.Name, reasonOf(tr))
	log.FromContext(ctx).Info("Applied TokenRevocation", "target", target, "shard", shard)
	tr.Status.AppliedAt = &metav1.Time{Time: now}
	return ctrl.Result{}, r.setApplied(ctx, tr, metav1.ConditionTrue, v1alpha1.ReasonApplied, "Recorded in "+r.IssuerNamespace+"/"+shard+"; every issuer replica refuses the revoked sessions", target, shard)
}

func reasonOf(tr *v1alpha1.TokenRevocation) string {
	if tr.Spec.Reason != "" {
		return tr.Spec.Reason
	}
	return revocation.ReasonRevoked
}

func (r *TokenRevocationReconciler) setApplied(ctx context.Context, tr *v1alpha1.TokenRevocation, status metav1.ConditionStatus, reason, msg, target, shard string) error {
	original := tr.DeepCopy()
	original.Status.AppliedAt = nil
	meta.SetStatusCondition(&tr.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionApplied, Status: status, Reason: reason,
		Message: msg, ObservedGeneration: tr.Generation, LastTransitionTime: metav1.NewTime(r.Clock.Now())})
	tr.Status.Target, tr.Status.Shard, tr.Status.ObservedGeneration = target, shard, tr.Generation
	return client.IgnoreNotFound(r.Client.Status().Patch(ctx, tr, client.MergeFrom(original)))
}

// SetupWithManager watches TokenRevocations, and TokenPolicies so that a revocation waiting for its policy
// is applied when the policy appears.
func (r *TokenRevocationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.TokenRevocation{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.TokenPolicy{}, handler.EnqueueRequestsFromMapFunc(r.revocationsForPolicy)).
		Named("tokenrevocation").
		Complete(r)
}

func (r *TokenRevocationReconciler) revocationsForPolicy(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1alpha1.TokenRevocationList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "Listing TokenRevocations for a policy failed")
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		tr := &list.Items[i]
		if tr.Spec.PolicyName == obj.GetName() && !meta.IsStatusConditionTrue(tr.Status.Conditions, v1alpha1.ConditionApplied) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(tr)})
		}
	}
	return reqs
}

package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// DefaultShardBudget is the number of bytes of records a shard may hold: well under the 1 MiB limit of a
// Kubernetes object, so that updates in place still fit when a shard is full.
const DefaultShardBudget = configmap.DefaultBudget

// TokenPolicyReconciler reconciles a TokenPolicy into its signing keys and JWKS (beside the policy), and
// into what the issuer needs to serve it, materialised in the issuer's namespace: the signing keys, the
// login material and the revocation objects.
type TokenPolicyReconciler struct {
	Client client.Client
	// APIReader reads around the cache: the Secrets policies name (the cache holds only their metadata) and
	// fresh reads before compare-and-swap writes.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	// IssuerURL is the issuer's external base URL; a policy is served at IssuerURL/<namespace>/<name>.
	IssuerURL string
	// IssuerNamespace is the issuer's namespace, where the objects the issuer reads are materialised.
	IssuerNamespace string
	// ShardStatusPeriod is how often a policy's shard fill is read again; 0 reads it only when the policy
	// or its keys change. The issuer writes a policy's journal many times a second: reconciling on each of
	// those writes would cost the API server more than the writes themselves.
	ShardStatusPeriod time.Duration
	// Revocations keeps the policies' revocation objects.
	Revocations *configmap.Keeper

	secrets     secretReader
	secretsOnce sync.Once
}

// Permissions of the controller: its own API (with the finalizer it puts on policies); Secrets, whose
// metadata it watches cluster-wide and which it reads one by one when a policy names them (to load the keys
// and users it validates), creates (generated keys, materialised copies) and deletes (materialised copies,
// in the issuer's namespace); ConfigMaps (JWKS beside each policy, revocation objects in the issuer's
// namespace); events.
// +kubebuilder:rbac:groups=tokenwarden.io,resources=tokenpolicies,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=tokenwarden.io,resources=tokenpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tokenwarden.io,resources=tokenpolicies/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// scope is what one reconcile pass knows and has decided so far; the sub-reconcilers fill it in.
type scope struct {
	policy *v1alpha1.TokenPolicy
	now    time.Time

	keySet     *keys.Set
	keyStatus  []v1alpha1.KeyStatus
	keySource  string   // the Secret the keys came from, and its version
	keysErr    *problem // why the keys are not ready, as said to the user
	jwksName   string
	login      string   // what password login is, when it is ready
	loginErr   *problem // why password login is not ready
	shardStats []v1alpha1.ShardStatus
	shardsErr  error // why the revocation store is not ready, as said to the user
	requeue    time.Duration
}

// requeueAt asks for another pass at t, keeping the earliest of all deadlines.
func (s *scope) requeueAt(t time.Time) {
	d := t.Sub(s.now)
	if d <= 0 {
		d = time.Second
	}
	if s.requeue == 0 || d < s.requeue {
		s.requeue = d
	}
}

// problem is why part of a policy cannot be served, as said to the user in a condition.
type problem struct {
	reason string
	err    error
}

func (p *problem) error() error {
	if p == nil {
		return nil
	}
	return p.err
}

// Reconcile brings one TokenPolicy's keys, JWKS, login material and revocation objects to what its spec
// says, materialises for the issuer what it validated, and reports all of it.
func (r *TokenPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, reterr error) {
	logger := log.FromContext(ctx)
	policy := &v1alpha1.TokenPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, policy); err != nil {
		if !isNotFound(err) {
			return ctrl.Result{}, err
		}
		// Gone without its finalizer having run (removed by hand, or never added): whatever was
		// materialised for a policy of that name is an orphan, once the API server confirms that the
		// policy is gone (the cache may not have seen it yet).
		err := r.APIReader.Get(ctx, req.NamespacedName, policy)
		if !isNotFound(err) {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		return ctrl.Result{}, r.removeMaterialised(ctx, req.NamespacedName, "")
	}
	if !policy.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, policy)
	}
	if !controllerutil.ContainsFinalizer(policy, v1alpha1.FinalizerMaterialised) {
		patched := policy.DeepCopy()
		controllerutil.AddFinalizer(patched, v1alpha1.FinalizerMaterialised)
		if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(policy, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, wrapf(err, "add finalizer")
		}
		policy = patched
	}

	r.secretsOnce.Do(r.initSecrets)
	s := &scope{policy: policy.DeepCopy(), now: r.Clock.Now()}
	defer func() {
		if err := r.patchStatus(ctx, policy, s, reterr); err != nil {
			reterr = errors.Join(reterr, err)
		}
	}()

	for _, step := range []func(context.Context, *scope) error{r.reconcileKeys, r.reconcileJWKS, r.materialiseKeys,
		r.reconcileLogin, r.reconcileSubjects, r.reconcileShards} {
		if err := step(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	}
	// Objects of an earlier policy of the same name (deleted while the controller was down).
	if err := r.removeMaterialised(ctx, req.NamespacedName, policy.ObjectPrefix()); err != nil {
		return ctrl.Result{}, err
	}
	if problems := errors.Join(s.keysErr.error(), s.loginErr.error()); problems != nil {
		// A Secret nobody can use will not mend itself; a change to it starts a new pass.
		return ctrl.Result{}, reconcile.TerminalError(problems)
	}
	logger.V(1).Info("Reconciled TokenPolicy", "policy", klog.KObj(policy), "activeKey", activeKeyID(s), "requeueAfter", s.requeue)
	return ctrl.Result{RequeueAfter: s.requeue}, nil
}

// finalize removes everything materialised for a deleted policy in the issuer's namespace (owner references
// cannot cross namespaces), then lets the policy go. What is beside the policy goes with it through its
// owner references.
func (r *TokenPolicyReconciler) finalize(ctx context.Context, p *v1alpha1.TokenPolicy) error {
	if !controllerutil.ContainsFinalizer(p, v1alpha1.FinalizerMaterialised) {
		return nil
	}
	if err := r.removeMaterialised(ctx, client.ObjectKeyFromObject(p), ""); err != nil {
		return err
	}
	r.Revocations.Forget(configmap.For(p, r.IssuerNamespace))
	patched := p.DeepCopy()
	controllerutil.RemoveFinalizer(patched, v1alpha1.FinalizerMaterialised)
	if err := r.Client.Patch(ctx, patched, client.MergeFrom(p)); client.IgnoreNotFound(err) != nil {
		return wrapf(err, "remove finalizer")
	}
	return nil
}

func activeKeyID(s *scope) string {
	if s.keySet == nil {
		return ""
	}
	return s.keySet.Active.ID
}

// SetupWithManager registers the reconciler. It watches TokenPolicies; the JWKS ConfigMaps they own; what
// is materialised for them in the issuer's namespace (mapped back by its labels), so that a copy deleted or
// changed by hand is restored; and the metadata of every Secret, so that a policy is reconciled as soon as a
// Secret it names appears, changes or goes. The Secrets themselves are read one by one, by name: the cache
// never holds their data.
func (r *TokenPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.secretsOnce.Do(r.initSecrets)
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.TokenPolicy{}, loginNamespaceIndex, loginNamespaces); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.TokenPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.ConfigMap{}, builder.WithPredicates(ignoreShardWrites)).
		Watches(&corev1.ConfigMap{}, materialised{delay: r.compactDelay()}).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.policiesForSecret)).
		WatchesMetadata(&corev1.ServiceAccount{}, handler.EnqueueRequestsFromMapFunc(r.policiesForSubject), builder.WithPredicates(comesOrGoes)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.policiesForSubject), builder.WithPredicates(comesOrGoes)).
		Named("tokenpolicy").
		Complete(r)
}

// comesOrGoes passes the creation and deletion of an object, not its updates: a Pod's status changes
// often, and what a session is bound to (a ServiceAccount's or a Pod's UID, a Pod's ServiceAccount) never
// changes in place.
var comesOrGoes = predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }}

// initSecrets reads Secrets' metadata through the client (the manager's cache) and their data around it.
func (r *TokenPolicyReconciler) initSecrets() {
	r.secrets = secretReader{meta: r.Client, api: r.APIReader}
}

// ignoreShardWrites drops what issuers of the previous layout did to the revocation objects beside the
// policy (the controller moves their records into the issuer's namespace on its next pass): journal updates
// and sealed segments.
var ignoreShardWrites = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool { return !isRevocations(e.ObjectNew) },
	CreateFunc: func(e event.CreateEvent) bool { return !isSegment(e.Object) },
	DeleteFunc: func(e event.DeleteEvent) bool { return !isSegment(e.Object) },
}

func isRevocations(o client.Object) bool {
	return o.GetLabels()[v1alpha1.LabelComponent] == v1alpha1.ComponentRevocations
}

func isSegment(o client.Object) bool {
	return isRevocations(o) && o.GetLabels()[v1alpha1.LabelRevocationRole] == v1alpha1.RevocationRoleSegment
}

// compactDelay is how long after a segment is sealed its policy is reconciled (and the segments merged,
// if they hold enough): a burst of seals costs one pass.
func (r *TokenPolicyReconciler) compactDelay() time.Duration {
	if r.ShardStatusPeriod > 0 {
		return r.ShardStatusPeriod
	}
	return time.Second
}

// materialisedPolicy is the policy an object materialised in the issuer's namespace was made for, from its
// labels.
func materialisedPolicy(o client.Object) (reconcile.Request, bool) {
	ns, name := o.GetLabels()[v1alpha1.LabelPolicyNamespace], o.GetLabels()[v1alpha1.LabelPolicy]
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}, ns != "" && name != ""
}

// materialised enqueues the policy of a ConfigMap materialised for it when the ConfigMap is created or
// deleted, but not for what the issuers do to revocation objects many times a second: journal updates, and
// segments, whose creation enqueues the policy after a delay (a burst of seals costs one pass, which merges
// them if they hold enough) and whose deletion is the merge's own. Their fill is read every
// ShardStatusPeriod instead.
type materialised struct{ delay time.Duration }

func (h materialised) Create(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	req, ok := materialisedPolicy(e.Object)
	switch {
	case !ok:
	case isSegment(e.Object):
		q.AddAfter(req, h.delay)
	default:
		q.Add(req)
	}
}

func (materialised) Update(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if req, ok := materialisedPolicy(e.ObjectNew); ok && !isRevocations(e.ObjectNew) {
		q.Add(req)
	}
}

func (materialised) Delete(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if req, ok := materialisedPolicy(e.Object); ok && !isSegment(e.Object) {
		q.Add(req)
	}
}

func (materialised) Generic(context.Context, event.GenericEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
}

// policiesForSecret maps a Secret to the policies it matters to: the one it was materialised for, or those
// of its namespace that name it (for their keys or their users).
func (r *TokenPolicyReconciler) policiesForSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	if req, ok := materialisedPolicy(obj); ok && obj.GetNamespace() == r.IssuerNamespace {
		return []reconcile.Request{req}
	}
	var list v1alpha1.TokenPolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "Listing TokenPolicies for a Secret failed", "secret", klog.KObj(obj))
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if p := &list.Items[i]; p.SigningSecretName() == obj.GetName() || p.UsersSecretName() == obj.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(p)})
		}
	}
	return reqs
}

// ownedLabels are the labels of every object the controller creates for policy beside it.
func ownedLabels(policy *v1alpha1.TokenPolicy, component string) map[string]string {
	return map[string]string{
		v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue,
		v1alpha1.LabelPolicy:    policy.Name,
		v1alpha1.LabelComponent: component,
	}
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

func wrapf(err error, format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, err)...)
}

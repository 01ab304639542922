package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
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
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// DefaultShardBudget is the number of bytes of records a shard may hold: well under the 1 MiB limit of a
// Kubernetes object, so that updates in place still fit when a shard is full.
const DefaultShardBudget = 512 << 10

// TokenPolicyReconciler reconciles a TokenPolicy into its signing keys, JWKS and revocation shards.
type TokenPolicyReconciler struct {
	Client client.Client
	// APIReader reads around the cache: for Secrets the cache does not hold (unlabelled ones) and for
	// fresh reads before compare-and-swap writes.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	// IssuerURL is the issuer's external base URL; a policy is served at IssuerURL/<namespace>/<name>.
	IssuerURL string
	// ShardBudget is the byte budget of one shard; 0 means DefaultShardBudget.
	ShardBudget int
	// ShardStatusPeriod is how often a policy's shard fill is read again; 0 reads it only when the policy
	// or its keys change. The issuer writes a policy's journal many times a second: reconciling on each of
	// those writes would cost the API server more than the writes themselves.
	ShardStatusPeriod time.Duration
	// CompactBytes is the least data of sealed segments merged into the bases at once; 0 means
	// DefaultCompactBytes.
	CompactBytes int

	summaries summaries
}

// Permissions of the controller: its own API, the Secrets and ConfigMaps it owns, and events. It reads
// Secrets to load keys a user provides, so it needs get on Secrets; its cache only holds labelled ones.
// +kubebuilder:rbac:groups=tokenwarden.io,resources=tokenpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=tokenwarden.io,resources=tokenpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// scope is what one reconcile pass knows and has decided so far; the sub-reconcilers fill it in.
type scope struct {
	policy *v1alpha1.TokenPolicy
	now    time.Time

	keySet     *keys.Set
	keyStatus  []v1alpha1.KeyStatus
	keysErr    error // why the keys are not ready, as said to the user
	jwksName   string
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

// Reconcile brings one TokenPolicy's keys, JWKS and shards to what its spec says and reports them.
func (r *TokenPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, reterr error) {
	logger := log.FromContext(ctx)
	policy := &v1alpha1.TokenPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, policy); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !policy.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owned objects go with it through garbage collection
	}

	s := &scope{policy: policy.DeepCopy(), now: r.Clock.Now()}
	defer func() {
		if err := r.patchStatus(ctx, policy, s, reterr); err != nil {
			reterr = errors.Join(reterr, err)
		}
	}()

	for _, step := range []func(context.Context, *scope) error{r.reconcileKeys, r.reconcileJWKS, r.reconcileShards} {
		if err := step(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	}
	if s.keysErr != nil {
		// A key Secret nobody can use will not mend itself; a change to it starts a new pass.
		return ctrl.Result{}, reconcile.TerminalError(s.keysErr)
	}
	logger.V(1).Info("Reconciled TokenPolicy", "policy", klog.KObj(policy), "activeKey", activeKeyID(s), "requeueAfter", s.requeue)
	return ctrl.Result{RequeueAfter: s.requeue}, nil
}

// IssuerURLFor is the iss of a policy's tokens.
func IssuerURLFor(base, namespace, name string) string {
	return strings.TrimSuffix(base, "/") + "/" + url.PathEscape(namespace) + "/" + url.PathEscape(name)
}

func activeKeyID(s *scope) string {
	if s.keySet == nil {
		return ""
	}
	return s.keySet.Active.ID
}

// SetupWithManager registers the reconciler: it watches TokenPolicies, the Secrets and ConfigMaps they
// own, and the key Secrets users provide (labelled tokenwarden.io/component=signing-keys).
func (r *TokenPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.ShardBudget == 0 {
		r.ShardBudget = DefaultShardBudget
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.TokenPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.ConfigMap{}, builder.WithPredicates(ignoreShardWrites)).
		Watches(&corev1.ConfigMap{}, segmentsSealed{delay: r.compactDelay()}).
		Owns(&corev1.Secret{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.policiesForSecret)).
		Named("tokenpolicy").
		Complete(r)
}

// ignoreShardWrites drops what the issuers do to revocation objects: journal updates and the creation and
// deletion of sealed segments (several a second under load). Bases and the journal still count when they
// are created or deleted. Their fill is read every ShardStatusPeriod instead, and segmentsSealed asks for
// the merge.
var ignoreShardWrites = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool { return !isRevocations(e.ObjectNew) },
	CreateFunc: func(e event.CreateEvent) bool { return !isSegment(e.Object) },
	DeleteFunc: func(e event.DeleteEvent) bool { return !isSegment(e.Object) },
}

func isRevocations(o client.Object) bool {
	return o.GetLabels()[v1alpha1.LabelComponent] == v1alpha1.ComponentRevocations
}

func isSegment(o client.Object) bool {
	role, _ := revocation.RoleOf(o.GetLabels()[v1alpha1.LabelPolicy], o.GetName())
	return isRevocations(o) && role == revocation.RoleSegment
}

// compactDelay is how long after a segment is sealed its policy is reconciled (and the segments merged,
// if they hold enough): a burst of seals costs one pass.
func (r *TokenPolicyReconciler) compactDelay() time.Duration {
	if r.ShardStatusPeriod > 0 {
		return r.ShardStatusPeriod
	}
	return time.Second
}

// segmentsSealed enqueues a segment's policy, delayed, when the segment is created.
type segmentsSealed struct{ delay time.Duration }

func (h segmentsSealed) Create(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if isSegment(e.Object) {
		q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: e.Object.GetNamespace(),
			Name: e.Object.GetLabels()[v1alpha1.LabelPolicy]}}, h.delay)
	}
}

func (segmentsSealed) Update(context.Context, event.UpdateEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
}

func (segmentsSealed) Delete(context.Context, event.DeleteEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
}

func (segmentsSealed) Generic(context.Context, event.GenericEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
}

// policiesForSecret maps a key Secret someone else created to the policies of its namespace that name it.
func (r *TokenPolicyReconciler) policiesForSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	if obj.GetLabels()[v1alpha1.LabelManagedBy] == v1alpha1.ManagedByValue {
		return nil // an owned Secret: Owns already maps it
	}
	var list v1alpha1.TokenPolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "Listing TokenPolicies for a Secret failed", "secret", klog.KObj(obj))
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if secretName(&list.Items[i]) == obj.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

// ownedLabels are the labels of every object the controller creates for policy.
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

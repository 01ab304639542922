package controllers

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// The issuer replicas' peer key: the HMAC-SHA256 key that signs what one replica forwards to another on the
// peer port, in data key IssuerPeerKeyField of an Opaque Secret.
const (
	IssuerPeerKeyField = "key"
	IssuerPeerKeySize  = 32
)

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update

// IssuerPeerKeyReconciler keeps the issuer replicas' peer key in Secret SecretName of Namespace, which the
// replicas read by name: it creates the Secret with a random key when there is none, and replaces a key
// shorter than IssuerPeerKeySize bytes. A key of that size or longer is never rewritten: the replicas
// would refuse each other until all of them read the new one.
type IssuerPeerKeyReconciler struct {
	Client     client.Client
	APIReader  client.Reader
	Namespace  string
	SecretName string
}

// Reconcile creates the Secret, or replaces its key when it is missing or too short.
func (r *IssuerPeerKeyReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	have := &corev1.Secret{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: r.SecretName}, have)
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, wrapf(err, "get secret %s", r.SecretName)
	}
	logger := log.FromContext(ctx).WithValues("secret", klog.KRef(r.Namespace, r.SecretName))
	if apierrors.IsNotFound(err) {
		want := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.SecretName, Labels: peerLabels()},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{IssuerPeerKeyField: newPeerKey()}}
		if err := r.Client.Create(ctx, want); err != nil {
			return ctrl.Result{}, wrapf(err, "create secret %s", r.SecretName)
		}
		logger.Info("Created the issuer replicas' peer key")
		return ctrl.Result{}, nil
	}
	held, ok := have.Data[IssuerPeerKeyField]
	if len(held) >= IssuerPeerKeySize {
		return ctrl.Result{}, nil
	}
	why := fmt.Sprintf("it was %d bytes, fewer than %d", len(held), IssuerPeerKeySize)
	if !ok {
		why = "the Secret had no " + IssuerPeerKeyField
	}
	updated := have.DeepCopy()
	if updated.Labels == nil {
		updated.Labels = map[string]string{}
	}
	maps.Copy(updated.Labels, peerLabels())
	if updated.Data == nil {
		updated.Data = map[string][]byte{}
	}
	updated.Data[IssuerPeerKeyField] = newPeerKey()
	if err := r.Client.Update(ctx, updated); err != nil {
		return ctrl.Result{}, wrapf(err, "update secret %s", r.SecretName)
	}
	logger.Info("Replaced the issuer replicas' peer key", "why", why)
	return ctrl.Result{}, nil
}

func newPeerKey() []byte {
	key := make([]byte, IssuerPeerKeySize)
	_, _ = rand.Read(key) // crypto/rand.Read never returns an error (it crashes the program instead)
	return key
}

func peerLabels() map[string]string {
	return map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelComponent: ComponentIssuerPeer}
}

// SetupWithManager reconciles on start and whenever the Secret changes or goes.
func (r *IssuerPeerKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.SecretName == "" || r.Namespace == "" {
		return fmt.Errorf("the issuer replicas' peer key needs a Secret and a namespace")
	}
	start := make(chan event.GenericEvent, 1)
	start <- event.GenericEvent{Object: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.SecretName}}}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace && o.GetName() == r.SecretName
	})
	toSecret := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []ctrl.Request {
		return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: r.SecretName}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("issuerpeer").
		WatchesRawSource(source.Channel(start, toSecret)).
		WatchesMetadata(&corev1.Secret{}, toSecret, builder.WithPredicates(ours)).
		Complete(r)
}

package controllers

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// CacheOptions narrows the controller's informers: ConfigMaps tokenwarden owns (those with a
// tokenwarden.io/component label); of Secrets only the metadata that says which exist and when they
// changed (name, namespace, UID, resourceVersion and tokenwarden's labels): never the data of a cluster's
// Secrets, which are read one by one when policies name them; of ServiceAccounts only their metadata; of
// Pods only their identity and ServiceAccount.
func CacheOptions() cache.Options {
	// managedFields name every data key of a revocation ConfigMap: as large as the keys, and never read.
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:    {Transform: secretMetadataOnly},
		&corev1.ConfigMap{}: {Label: ComponentSelector()},
		&corev1.Pod{}:       {Transform: podIdentityOnly},
	}}
}

// podIdentityOnly keeps of a Pod what a session can be bound to: its identity and its ServiceAccount.
func podIdentityOnly(in any) (any, error) {
	pod, ok := in.(*corev1.Pod)
	if !ok {
		return in, nil
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
		ResourceVersion: pod.ResourceVersion, DeletionTimestamp: pod.DeletionTimestamp},
		Spec: corev1.PodSpec{ServiceAccountName: pod.Spec.ServiceAccountName}}, nil
}

// secretMetadataOnly keeps of a Secret's metadata what the controller reads: its identity, version and
// tokenwarden's labels. (Annotations can be large: kubectl apply copies the whole Secret into one.)
func secretMetadataOnly(in any) (any, error) {
	obj, err := meta.Accessor(in)
	if err != nil {
		return in, nil
	}
	if m, ok := in.(*metav1.PartialObjectMetadata); ok {
		kept := map[string]string{}
		for _, k := range []string{v1alpha1.LabelPolicy, v1alpha1.LabelPolicyNamespace, v1alpha1.LabelObjectPrefix, v1alpha1.LabelComponent, v1alpha1.LabelManagedBy} {
			if v, ok := obj.GetLabels()[k]; ok {
				kept[k] = v
			}
		}
		m.ObjectMeta = metav1.ObjectMeta{Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID(),
			ResourceVersion: obj.GetResourceVersion(), DeletionTimestamp: obj.GetDeletionTimestamp(), Labels: kept}
		return m, nil
	}
	obj.SetManagedFields(nil)
	return in, nil
}

// ComponentSelector selects objects labelled with a tokenwarden component.
func ComponentSelector() labels.Selector {
	req, err := labels.NewRequirement(v1alpha1.LabelComponent, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant, valid label key
	}
	return labels.NewSelector().Add(*req)
}

// Options configure the reconcilers Setup registers.
type Options struct {
	// IssuerURL is the issuer's external base URL (TokenPolicyReconciler.IssuerURL).
	IssuerURL string
	// IssuerNamespace is the issuer's namespace (TokenPolicyReconciler.IssuerNamespace); required.
	IssuerNamespace string
	// ShardBudget is the byte budget of one revocation shard; zero means DefaultShardBudget.
	ShardBudget int
	// ShardStatusPeriod is TokenPolicyReconciler's; zero reads the fill only on change.
	ShardStatusPeriod time.Duration
	// CompactBytes is the least data of sealed segments merged at once; zero means DefaultCompactBytes.
	CompactBytes int
	// Clock is the time keys rotate and revocations apply at; nil means the real clock.
	Clock clock.PassiveClock
	// IssuerTLS, when its SecretName is set, has the controller keep the issuer's self-signed serving
	// certificate (IssuerCertReconciler) in the issuer's namespace.
	IssuerTLS IssuerTLS
	// IssuerPeerSecret, when set, has the controller keep the issuer replicas' peer key
	// (IssuerPeerKeyReconciler) in this Secret of the issuer's namespace.
	IssuerPeerSecret string
}

// IssuerTLS says where the issuer's self-signed certificate goes and what it names.
type IssuerTLS struct {
	SecretName, CAConfigMap string
	Hosts                   []string
}

// Setup registers the TokenPolicy and TokenRevocation reconcilers with mgr, and those of the issuer's
// certificate and peer key when o asks for them, as the controller binary runs them. mgr's cache must be
// built with CacheOptions.
func Setup(mgr ctrl.Manager, o Options) error {
	if o.IssuerNamespace == "" {
		return fmt.Errorf("no issuer namespace")
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	recorder := mgr.GetEventRecorder("tokenwarden-controller")
	keeper := &configmap.Keeper{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Budget: o.ShardBudget, CompactBytes: o.CompactBytes,
		Compacted: compactions.record}
	policies := &TokenPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
		Recorder: recorder, Clock: o.Clock, IssuerURL: o.IssuerURL, IssuerNamespace: o.IssuerNamespace,
		ShardStatusPeriod: o.ShardStatusPeriod, Revocations: keeper}
	if err := policies.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the TokenPolicy controller: %w", err)
	}
	revocations := &TokenRevocationReconciler{Client: mgr.GetClient(), Recorder: recorder, Clock: o.Clock,
		IssuerNamespace: o.IssuerNamespace, Revocations: keeper}
	if err := revocations.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the TokenRevocation controller: %w", err)
	}
	if o.IssuerTLS.SecretName != "" {
		certs := &IssuerCertReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: o.Clock, Namespace: o.IssuerNamespace,
			SecretName: o.IssuerTLS.SecretName, CAConfigMap: o.IssuerTLS.CAConfigMap, Hosts: o.IssuerTLS.Hosts}
		if err := certs.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the issuer certificate controller: %w", err)
		}
	}
	if o.IssuerPeerSecret != "" {
		peer := &IssuerPeerKeyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: o.IssuerNamespace,
			SecretName: o.IssuerPeerSecret}
		if err := peer.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the issuer peer key controller: %w", err)
		}
	}
	return nil
}

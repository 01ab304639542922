package controllers

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// CacheOptions narrows the controller's informers to the Secrets and ConfigMaps tokenwarden owns or is
// pointed at (those with a tokenwarden.io/component label): never all Secrets of a cluster.
func CacheOptions() cache.Options {
	// managedFields name every data key of a revocation ConfigMap: as large as the keys, and never read.
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:    {Label: ComponentSelector()},
		&corev1.ConfigMap{}: {Label: ComponentSelector()},
	}}
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
	// ShardBudget and ShardStatusPeriod are TokenPolicyReconciler's; zero means their defaults.
	ShardBudget       int
	ShardStatusPeriod time.Duration
	// CompactBytes is TokenPolicyReconciler's; zero means DefaultCompactBytes.
	CompactBytes int
	// Clock is the time keys rotate and revocations apply at; nil means the real clock.
	Clock clock.PassiveClock
}

// Setup registers the TokenPolicy and TokenRevocation reconcilers with mgr, as the controller binary runs
// them.
func Setup(mgr ctrl.Manager, o Options) error {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	recorder := mgr.GetEventRecorder("tokenwarden-controller")
	policies := &TokenPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
		Recorder: recorder, Clock: o.Clock, IssuerURL: o.IssuerURL, ShardBudget: o.ShardBudget, ShardStatusPeriod: o.ShardStatusPeriod,
		CompactBytes: o.CompactBytes}
	if err := policies.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the TokenPolicy controller: %w", err)
	}
	revocations := &TokenRevocationReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: recorder, Clock: o.Clock}
	if err := revocations.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the TokenRevocation controller: %w", err)
	}
	return nil
}

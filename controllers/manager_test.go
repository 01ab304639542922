package controllers

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// runManager runs both reconcilers through Setup, as the controller binary does, with the given options on
// top of the binary's narrow caches; the returned stop ends it without releasing a Lease, as a crash would.
func runManager(t *testing.T, opts ctrl.Options, issuerNS string) (stop func(), elected <-chan struct{}) {
	t.Helper()
	return runManagerWith(t, opts, Options{IssuerURL: "http://issuer.test", IssuerNamespace: issuerNS})
}

// runManagerWith is runManager with Setup's options o.
func runManagerWith(t *testing.T, opts ctrl.Options, o Options) (stop func(), elected <-chan struct{}) {
	t.Helper()
	opts.Scheme, opts.Cache, opts.Metrics = env.Scheme, CacheOptions(), metricsserver.Options{BindAddress: "0"}
	opts.Controller = config.Controller{SkipNameValidation: ptr.To(true)} // several managers in one test process
	mgr, err := ctrl.NewManager(env.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := Setup(mgr, o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop, mgr.Elected()
}

// TestTheManagerReconcilesFromWatches runs the reconciler as the controller binary does, with its narrow
// caches, and checks that changes to a policy and to a user's Secret (which carries no label: the cache sees
// only the metadata of Secrets) are picked up without a nudge.
func TestTheManagerReconcilesFromWatches(t *testing.T) {
	ns, issuerNS := env.Namespace(t), env.Namespace(t)
	runManager(t, ctrl.Options{}, issuerNS)
	ctx := context.Background()

	// A policy whose user Secret is missing its key: not ready until the Secret is fixed.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "user-keys",
		Annotations: map[string]string{v1alpha1.AnnotationAllowedPolicies: "watched"}}, Data: map[string][]byte{"note": []byte("empty")}}
	if err := env.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	p := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "watched"},
		Spec: v1alpha1.TokenPolicySpec{Audiences: []string{"api"}, Signing: v1alpha1.SigningSpec{SecretName: "user-keys"}}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	readyIs := func(want metav1.ConditionStatus) func() (bool, string) {
		return func() (bool, string) {
			got := &v1alpha1.TokenPolicy{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
				return false, err.Error()
			}
			c := findCondition(got, v1alpha1.ConditionReady)
			return c != nil && c.Status == want, "Ready is " + condString(c)
		}
	}
	testenv.Eventually(t, 30*time.Second, readyIs(metav1.ConditionFalse))

	k, err := keys.Generate(v1alpha1.EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	secret.Data = map[string][]byte{k.DataKey(): encoded(t, k)}
	if err := env.Client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, readyIs(metav1.ConditionTrue))

	// Raising the shard count is seen through the policy watch.
	got := &v1alpha1.TokenPolicy{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
		t.Fatal(err)
	}
	got.Spec.Revocation.Shards = 6
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		var list corev1.ConfigMapList
		if err := env.Client.List(ctx, &list, client.InNamespace(issuerNS), client.MatchingLabels{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations,
			v1alpha1.LabelPolicyNamespace: ns, v1alpha1.LabelPolicy: "watched"}); err != nil {
			return false, err.Error()
		}
		return len(list.Items) == 7, "shard bases and the journal: " + itoa(len(list.Items))
	})
}

func condString(c *metav1.Condition) string {
	if c == nil {
		return "absent"
	}
	return string(c.Status) + " (" + c.Reason + ": " + c.Message + ")"
}

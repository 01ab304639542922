package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// fixture is a reconciler driven by hand against the real API server, with a fake clock, and the
// events it recorded.
type fixture struct {
	t        *testing.T
	ns       string
	issuerNS string // the issuer's namespace, where the controller materialises what the issuer reads
	clock    *clocktesting.FakeClock
	events   *events.FakeRecorder
	r        *TokenPolicyReconciler
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, ns: env.Namespace(t), issuerNS: env.Namespace(t), clock: clocktesting.NewFakeClock(epoch), events: events.NewFakeRecorder(100)}
	f.r = &TokenPolicyReconciler{Client: env.Client, APIReader: env.Client, Scheme: env.Scheme, Recorder: f.events,
		Clock: f.clock, IssuerURL: "https://issuer.example.com/", IssuerNamespace: f.issuerNS,
		Revocations: &configmap.Keeper{Client: env.Client, Reader: env.Client}}
	return f
}

// policy builds a TokenPolicy; mutate adjusts the spec before it is created.
func (f *fixture) policy(name string, mutate func(*v1alpha1.TokenPolicySpec)) *v1alpha1.TokenPolicy {
	f.t.Helper()
	p := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec: v1alpha1.TokenPolicySpec{Audiences: []string{"payments-api"}}}
	if mutate != nil {
		mutate(&p.Spec)
	}
	if err := env.Client.Create(context.Background(), p); err != nil {
		f.t.Fatalf("create policy %s: %v", name, err)
	}
	return p
}

// reconcile runs one pass and returns its result; a failed pass fails the test unless wantErr.
func (f *fixture) reconcile(name string) ctrl.Result {
	f.t.Helper()
	res, err := f.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: f.ns, Name: name}})
	if err != nil {
		f.t.Fatalf("reconcile %s: %v", name, err)
	}
	return res
}

func (f *fixture) get(name string) *v1alpha1.TokenPolicy {
	f.t.Helper()
	p := &v1alpha1.TokenPolicy{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: name}, p); err != nil {
		f.t.Fatalf("get policy %s: %v", name, err)
	}
	return p
}

func (f *fixture) secret(name string) *corev1.Secret {
	f.t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: name}, s); err != nil {
		f.t.Fatalf("get secret %s: %v", name, err)
	}
	return s
}

// handle is the handle on policy name's revocation objects.
func (f *fixture) handle(name string) configmap.Policy {
	return configmap.For(f.get(name), f.issuerNS)
}

// materialised reads the ConfigMap <object prefix of policy>-<suffix> of the issuer's namespace.
func (f *fixture) materialised(policy, suffix string) *corev1.ConfigMap {
	f.t.Helper()
	cm := &corev1.ConfigMap{}
	name := f.get(policy).ObjectPrefix() + "-" + suffix
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: f.issuerNS, Name: name}, cm); err != nil {
		f.t.Fatalf("get configmap %s of the issuer's namespace: %v", name, err)
	}
	return cm
}

// issuerSecret reads Secret name of the issuer's namespace.
func (f *fixture) issuerSecret(name string) *corev1.Secret {
	f.t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: f.issuerNS, Name: name}, s); err != nil {
		f.t.Fatalf("get secret %s of the issuer's namespace: %v", name, err)
	}
	return s
}

// noIssuerSecret fails the test if the issuer's namespace has Secret name: nothing for the issuer to serve.
func (f *fixture) noIssuerSecret(name string) {
	f.t.Helper()
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: f.issuerNS, Name: name}, &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		f.t.Fatalf("secret %s of the issuer's namespace: got %v; want it not to exist", name, err)
	}
}

func (f *fixture) configMap(name string) *corev1.ConfigMap {
	f.t.Helper()
	cm := &corev1.ConfigMap{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: name}, cm); err != nil {
		f.t.Fatalf("get configmap %s: %v", name, err)
	}
	return cm
}

// drainEvents returns the events recorded so far.
func (f *fixture) drainEvents() []string {
	var out []string
	for {
		select {
		case e := <-f.events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func findCondition(p *v1alpha1.TokenPolicy, t string) *metav1.Condition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func reconcileRequest(ns, name string) ctrl.Request {
	return ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
}

package policies

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/internal/login"
	"github.com/tokenwarden/tokenwarden/issuer"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// Source is an issuer.Policies fed by informers: every TokenPolicy, and the keys and login material the
// controller materialised for them in the issuer's namespace. The issuer serves a policy once its keys are
// there: the controller puts them there only after it validated them and the policy may use them.
type Source struct {
	reader      client.Reader // the informer cache
	namespace   string        // the issuer's
	externalURL string
	clock       clock.PassiveClock
	log         logr.Logger

	mu       sync.RWMutex
	policies map[types.NamespacedName]*issuer.Policy
	problems map[types.NamespacedName]string // why a policy cannot be served, for logs and readiness detail
	synced   atomic.Bool
}

var _ issuer.Policies = (*Source)(nil)

// New returns a Source that reads through c (an informer cache that holds TokenPolicies and the Secrets of
// namespace, the issuer's) and serves each policy at externalURL/<namespace>/<name>.
func New(c client.Reader, namespace, externalURL string, clk clock.PassiveClock, log logr.Logger) *Source {
	return &Source{reader: c, namespace: namespace, externalURL: externalURL, clock: clk, log: log,
		policies: map[types.NamespacedName]*issuer.Policy{}, problems: map[types.NamespacedName]string{}}
}

// Start registers the Source with the informers of c and rebuilds every policy once they have synced.
// It returns once the first build is done (or ctx ends).
func (s *Source) Start(ctx context.Context, c cache.Cache) error {
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.changed(ctx, obj) },
		UpdateFunc: func(_, obj any) { s.changed(ctx, obj) },
		DeleteFunc: func(obj any) { s.changed(ctx, obj) },
	}
	for _, obj := range []client.Object{&v1alpha1.TokenPolicy{}, &corev1.Secret{}, &corev1.ConfigMap{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	if !c.WaitForCacheSync(ctx) {
		return fmt.Errorf("caches did not sync: %w", ctx.Err())
	}
	var list v1alpha1.TokenPolicyList
	if err := s.reader.List(ctx, &list); err != nil {
		return fmt.Errorf("list TokenPolicies: %w", err)
	}
	for i := range list.Items {
		s.rebuild(ctx, client.ObjectKeyFromObject(&list.Items[i]))
	}
	s.synced.Store(true)
	return nil
}

// changed rebuilds what obj affects: the policy itself, or the policy a Secret was materialised for.
func (s *Source) changed(ctx context.Context, obj any) {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	o, ok := obj.(client.Object)
	if !ok {
		return
	}
	if _, isPolicy := o.(*v1alpha1.TokenPolicy); isPolicy {
		s.rebuild(ctx, client.ObjectKeyFromObject(o))
		return
	}
	if _, isConfigMap := o.(*corev1.ConfigMap); isConfigMap && o.GetLabels()[v1alpha1.LabelComponent] != v1alpha1.ComponentSubjects {
		return // revocation objects: the store's, written many times a second
	}
	ns, name := o.GetLabels()[v1alpha1.LabelPolicyNamespace], o.GetLabels()[v1alpha1.LabelPolicy]
	if o.GetNamespace() == s.namespace && ns != "" && name != "" {
		s.rebuild(ctx, types.NamespacedName{Namespace: ns, Name: name})
	}
}

// rebuild builds the policy key from the cache, or forgets it.
func (s *Source) rebuild(ctx context.Context, key types.NamespacedName) {
	p, err := s.build(ctx, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case p != nil:
		s.policies[key] = p
		delete(s.problems, key)
	case err != nil:
		// The controller validated what it materialised, so this is a copy changed by hand: serve nothing
		// rather than something nobody checked. The policy's status says whether it should be served.
		if s.problems[key] != err.Error() {
			s.log.Info("TokenPolicy cannot be served with what is materialised for it", "policy", key, "reason", err.Error())
		}
		delete(s.policies, key)
		s.problems[key] = err.Error()
	default:
		delete(s.policies, key)
		delete(s.problems, key)
	}
}

// build builds the policy key from the cache: nil, nil when it is not (or no longer) to be served.
func (s *Source) build(ctx context.Context, key types.NamespacedName) (*issuer.Policy, error) {
	obj := &v1alpha1.TokenPolicy{}
	if err := s.reader.Get(ctx, key, obj); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if !obj.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	secret := &corev1.Secret{}
	if err := s.reader.Get(ctx, types.NamespacedName{Namespace: s.namespace, Name: obj.IssuerKeysSecretName()}, secret); err != nil {
		// Not materialised (yet): the controller has not validated the policy's keys, or refused them.
		return nil, client.IgnoreNotFound(err)
	}
	set, err := keys.FromSecret(obj.Spec.Signing.Algorithm, secret)
	if err != nil {
		return nil, err
	}
	iss := obj.IssuerURL(s.externalURL)
	codec, err := token.New(token.Policy{Issuer: iss, Audiences: obj.Spec.Audiences, AccessLifetime: obj.Spec.AccessToken.Lifetime.Duration, Keys: set}, s.clock)
	if err != nil {
		return nil, err
	}
	p := &issuer.Policy{Key: key, State: types.NamespacedName{Namespace: s.namespace, Name: obj.ObjectPrefix()}, Object: obj, Issuer: iss, Codec: codec, Keys: set}
	if obj.UsersSecretName() != "" {
		users := &corev1.Secret{}
		err := s.reader.Get(ctx, types.NamespacedName{Namespace: s.namespace, Name: obj.IssuerUsersSecretName()}, users)
		switch {
		case err == nil:
			if p.Users, err = login.New(users.Data); err != nil {
				return nil, err
			}
		case !apierrors.IsNotFound(err):
			return nil, err
		}
		// Not materialised: the controller refused the users Secret (the policy's LoginReady condition says
		// why), so password login is off.
	}
	if len(obj.Spec.Login.ServiceAccounts) > 0 {
		subjects := &corev1.ConfigMap{}
		err := s.reader.Get(ctx, types.NamespacedName{Namespace: s.namespace, Name: obj.IssuerSubjectsConfigMapName()}, subjects)
		switch {
		case err == nil:
			p.Subjects = login.Subjects(subjects.Data)
		case !apierrors.IsNotFound(err):
			return nil, err
		}
		// Not materialised yet: sessions of ServiceAccounts cannot be checked, and are not refreshed.
	}
	return p, nil
}

// Get returns the policy namespace/name if it can be served.
func (s *Source) Get(namespace, name string) (*issuer.Policy, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.policies[types.NamespacedName{Namespace: namespace, Name: name}]
	return p, ok
}

// Ready reports whether the caches have synced and every policy has been built once.
func (s *Source) Ready() bool { return s.synced.Load() }

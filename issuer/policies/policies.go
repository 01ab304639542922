package policies

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/issuer"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// Source is an issuer.Policies fed by informers.
type Source struct {
	reader      client.Reader // the informer cache
	externalURL string
	clock       clock.PassiveClock
	log         logr.Logger

	mu       sync.RWMutex
	policies map[types.NamespacedName]*issuer.Policy
	problems map[types.NamespacedName]string // why a policy cannot be served, for logs and readiness detail
	synced   atomic.Bool
}

var _ issuer.Policies = (*Source)(nil)

// New returns a Source that reads through c (an informer cache that holds TokenPolicies and the labelled
// Secrets) and serves each policy at externalURL/<namespace>/<name>.
func New(c client.Reader, externalURL string, clk clock.PassiveClock, log logr.Logger) *Source {
	return &Source{reader: c, externalURL: externalURL, clock: clk, log: log,
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
	for _, obj := range []client.Object{&v1alpha1.TokenPolicy{}, &corev1.Secret{}} {
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

// changed rebuilds what obj affects: the policy itself, or the policies of the Secret's namespace.
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
	var list v1alpha1.TokenPolicyList
	if err := s.reader.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		s.log.Error(err, "Listing TokenPolicies after a Secret change failed", "secret", klog.KObj(o))
		return
	}
	for i := range list.Items {
		p := &list.Items[i]
		if secretName(p) == o.GetName() || p.Spec.Login.PasswordSecretName == o.GetName() {
			s.rebuild(ctx, client.ObjectKeyFromObject(p))
		}
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
		// Keep serving what was loaded before (keys being rotated, a Secret briefly missing): refusing
		// every token of the policy would be worse than serving with the last good keys.
		if s.problems[key] != err.Error() {
			s.log.Info("TokenPolicy cannot be served with its current objects", "policy", key, "reason", err.Error())
		}
		s.problems[key] = err.Error()
	default:
		delete(s.policies, key)
		delete(s.problems, key)
	}
}

func (s *Source) build(ctx context.Context, key types.NamespacedName) (*issuer.Policy, error) {
	obj := &v1alpha1.TokenPolicy{}
	if err := s.reader.Get(ctx, key, obj); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	secret := &corev1.Secret{}
	if err := s.reader.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: secretName(obj)}, secret); err != nil {
		return nil, fmt.Errorf("signing-key secret %s: %w", secretName(obj), err)
	}
	set, err := keys.FromSecret(obj.Spec.Signing.Algorithm, secret)
	if err != nil {
		return nil, err
	}
	iss := IssuerURL(s.externalURL, key)
	codec, err := token.New(token.Policy{Issuer: iss, Audiences: obj.Spec.Audiences, AccessLifetime: obj.Spec.AccessToken.Lifetime.Duration, Keys: set}, s.clock)
	if err != nil {
		return nil, err
	}
	p := &issuer.Policy{Key: key, Object: obj, Issuer: iss, Codec: codec, Keys: set}
	if name := obj.Spec.Login.PasswordSecretName; name != "" {
		users := &corev1.Secret{}
		if err := s.reader.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: name}, users); err != nil {
			return nil, fmt.Errorf("password secret %s (label it %s=%s): %w", name, v1alpha1.LabelComponent, v1alpha1.ComponentUsers, err)
		}
		p.Users = newPasswords(users.Data)
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

// IssuerURL is the iss of policy key when the issuer is reached at externalURL.
func IssuerURL(externalURL string, key types.NamespacedName) string {
	for len(externalURL) > 0 && externalURL[len(externalURL)-1] == '/' {
		externalURL = externalURL[:len(externalURL)-1]
	}
	return externalURL + "/" + key.Namespace + "/" + key.Name
}

func secretName(p *v1alpha1.TokenPolicy) string {
	if p.Spec.Signing.SecretName != "" {
		return p.Spec.Signing.SecretName
	}
	return p.Name + "-signing-keys"
}

// passwords checks usernames and passwords against bcrypt hashes. An unknown user costs one bcrypt
// comparison, like a known one, so timing does not tell which usernames exist.
type passwords struct {
	hashes map[string][]byte
}

// decoy is a bcrypt hash (cost 10, the default) of a random password nobody knows, compared against for
// unknown users.
var decoy = sync.OnceValue(func() []byte {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	h, err := bcrypt.GenerateFromPassword(secret, bcrypt.DefaultCost)
	if err != nil {
		panic(err) // only for a password over 72 bytes
	}
	return h
})

func newPasswords(data map[string][]byte) *passwords {
	p := &passwords{hashes: make(map[string][]byte, len(data))}
	for user, hash := range data {
		p.hashes[user] = append([]byte(nil), hash...)
	}
	return p
}

// Check implements issuer.PasswordChecker.
func (p *passwords) Check(username, password string) bool {
	hash, known := p.hashes[username]
	if !known {
		hash = decoy()
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	return subtle.ConstantTimeEq(boolInt(known), 1)&subtle.ConstantTimeEq(boolInt(ok), 1) == 1
}

func boolInt(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

package controllers

import (
	"context"
	"maps"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// secretReader reads the Secrets that policies name, around the cache and once per resourceVersion: the
// cache holds only the metadata of Secrets (never their data), which says whether one changed. So the
// controller holds the data of the Secrets the policies use, not of every Secret of the cluster.
type secretReader struct {
	meta client.Reader // the cache: metadata only
	api  client.Reader

	mu   sync.Mutex
	held map[types.NamespacedName]*corev1.Secret
}

// get returns the Secret key as the API server holds it, or as of the version the cache last saw. Callers
// must not modify it.
func (r *secretReader) get(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	err := r.meta.Get(ctx, key, m)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	r.mu.Lock()
	held := r.held[key]
	r.mu.Unlock()
	if err == nil && held != nil && held.ResourceVersion == m.ResourceVersion {
		return held, nil
	}
	// Changed, or not seen by the cache (yet): the API server says.
	secret := &corev1.Secret{}
	if err := r.api.Get(ctx, key, secret); err != nil {
		if isNotFound(err) {
			r.forget(key)
		}
		return nil, err
	}
	r.keep(secret)
	return secret, nil
}

// keep remembers s, as read or just written.
func (r *secretReader) keep(s *corev1.Secret) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held == nil {
		r.held = map[types.NamespacedName]*corev1.Secret{}
	}
	r.held[client.ObjectKeyFromObject(s)] = s
}

func (r *secretReader) forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.held, key)
}

// materialisedLabels are the labels of an object materialised for policy p in the issuer's namespace.
func materialisedLabels(p *v1alpha1.TokenPolicy, component string) map[string]string {
	return map[string]string{
		v1alpha1.LabelManagedBy:       v1alpha1.ManagedByValue,
		v1alpha1.LabelComponent:       component,
		v1alpha1.LabelPolicy:          p.Name,
		v1alpha1.LabelPolicyNamespace: p.Namespace,
		v1alpha1.LabelObjectPrefix:    p.ObjectPrefix(),
	}
}

// materialise makes the Secret name of the issuer's namespace hold data and annotations, for policy p: it
// creates it, or updates it when it differs.
func (r *TokenPolicyReconciler) materialise(ctx context.Context, p *v1alpha1.TokenPolicy, name, component string, data map[string][]byte, annotations map[string]string) error {
	key := types.NamespacedName{Namespace: r.IssuerNamespace, Name: name}
	want := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
		Labels: materialisedLabels(p, component), Annotations: annotations}, Type: corev1.SecretTypeOpaque, Data: data}
	have, err := r.secrets.get(ctx, key)
	switch {
	case isNotFound(err):
		if err := r.Client.Create(ctx, want); err != nil {
			return wrapf(err, "create %s in namespace %s", name, r.IssuerNamespace)
		}
		r.secrets.keep(want)
		return nil
	case err != nil:
		return wrapf(err, "read %s in namespace %s", name, r.IssuerNamespace)
	}
	if equality.Semantic.DeepEqual(have.Data, data) && maps.Equal(have.Labels, want.Labels) && maps.Equal(have.Annotations, annotations) {
		return nil
	}
	updated := have.DeepCopy()
	updated.Labels, updated.Annotations, updated.Data, updated.StringData = want.Labels, annotations, data, nil
	if err := r.Client.Update(ctx, updated); err != nil {
		return wrapf(err, "update %s in namespace %s", name, r.IssuerNamespace)
	}
	r.secrets.keep(updated)
	return nil
}

// unmaterialise deletes the Secret name of the issuer's namespace, if it exists: what the issuer must no
// longer serve.
func (r *TokenPolicyReconciler) unmaterialise(ctx context.Context, name string) error {
	key := types.NamespacedName{Namespace: r.IssuerNamespace, Name: name}
	secret, err := r.secrets.get(ctx, key)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := r.Client.Delete(ctx, secret, client.Preconditions{UID: &secret.UID}); client.IgnoreNotFound(err) != nil {
		return wrapf(err, "delete %s in namespace %s", name, r.IssuerNamespace)
	}
	r.secrets.forget(key)
	return nil
}

// removeMaterialised deletes every object materialised in the issuer's namespace for the policy named
// policy, except those of the object prefix keep ("" keeps none): what a deleted policy, or an earlier
// policy of the same name, left there.
func (r *TokenPolicyReconciler) removeMaterialised(ctx context.Context, policy types.NamespacedName, keep string) error {
	of := client.MatchingLabels{v1alpha1.LabelPolicyNamespace: policy.Namespace, v1alpha1.LabelPolicy: policy.Name}
	secrets := &metav1.PartialObjectMetadataList{}
	secrets.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := r.Client.List(ctx, secrets, client.InNamespace(r.IssuerNamespace), of); err != nil {
		return wrapf(err, "list the Secrets materialised for %s", policy)
	}
	for i := range secrets.Items {
		m := &secrets.Items[i]
		if m.Labels[v1alpha1.LabelObjectPrefix] == keep {
			continue
		}
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: m.Name}}
		if err := r.Client.Delete(ctx, secret, client.Preconditions{UID: &m.UID}); client.IgnoreNotFound(err) != nil {
			return wrapf(err, "delete %s in namespace %s", m.Name, m.Namespace)
		}
		r.secrets.forget(client.ObjectKeyFromObject(m))
	}
	var cms corev1.ConfigMapList
	if err := r.Client.List(ctx, &cms, client.InNamespace(r.IssuerNamespace), of); err != nil {
		return wrapf(err, "list the ConfigMaps materialised for %s", policy)
	}
	prefixes := map[string]bool{}
	for i := range cms.Items {
		cm := &cms.Items[i]
		prefix := cm.Labels[v1alpha1.LabelObjectPrefix]
		switch {
		case prefix == keep || prefix == "":
		case cm.Labels[v1alpha1.LabelComponent] == v1alpha1.ComponentRevocations:
			prefixes[prefix] = true // the Keeper deletes them in order
		default:
			if err := r.Client.Delete(ctx, cm, client.Preconditions{UID: &cm.UID}); client.IgnoreNotFound(err) != nil {
				return wrapf(err, "delete %s in namespace %s", cm.Name, cm.Namespace)
			}
		}
	}
	for prefix := range prefixes {
		h := configmap.Policy{Key: types.NamespacedName{Namespace: r.IssuerNamespace, Name: prefix}, Owner: policy}
		if _, err := r.Revocations.Delete(ctx, h); err != nil {
			return wrapf(err, "delete the revocation objects of %s", policy)
		}
		r.Revocations.Forget(h)
	}
	return nil
}

package controllers

import (
	"context"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/login"
)

// Permissions to see which ServiceAccounts exist, and their Pods: a session opened by exchanging a
// ServiceAccount token ends when that ServiceAccount or the Pod its token was bound to is gone.
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// loginNamespaceIndex indexes TokenPolicies by the namespaces of the ServiceAccounts they let log in.
const loginNamespaceIndex = "tokenwarden.io/login-namespaces"

func loginNamespaces(o client.Object) []string {
	p, ok := o.(*v1alpha1.TokenPolicy)
	if !ok {
		return nil
	}
	var out []string
	for _, ref := range p.Spec.Login.ServiceAccounts {
		if !slices.Contains(out, ref.Namespace) {
			out = append(out, ref.Namespace)
		}
	}
	return out
}

// reconcileSubjects materialises, for a policy that lets ServiceAccounts exchange their tokens, which of
// those ServiceAccounts exist (with their UIDs) and which Pods run as them, in ConfigMap
// <prefix>-subjects of the issuer's namespace: the issuer compares a session's binding with it on every
// refresh and introspection. It is computed from what exists, not from events, so a change the controller
// missed while it was down is caught on its next pass.
func (r *TokenPolicyReconciler) reconcileSubjects(ctx context.Context, s *scope) error {
	p := s.policy
	name := p.IssuerSubjectsConfigMapName()
	if len(p.Spec.Login.ServiceAccounts) == 0 {
		return r.deleteConfigMap(ctx, name)
	}
	data := map[string]string{}
	for _, ns := range loginNamespaces(p) {
		sas := &metav1.PartialObjectMetadataList{}
		sas.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccountList"))
		if err := r.Client.List(ctx, sas, client.InNamespace(ns)); err != nil {
			return wrapf(err, "list the ServiceAccounts of %s", ns)
		}
		for _, sa := range sas.Items {
			if allowedServiceAccount(p, ns, sa.Name) {
				data[login.ServiceAccountKey(ns, sa.Name)] = string(sa.UID)
			}
		}
		var pods corev1.PodList
		if err := r.Client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			return wrapf(err, "list the Pods of %s", ns)
		}
		for _, pod := range pods.Items {
			if sa := pod.Spec.ServiceAccountName; sa != "" && allowedServiceAccount(p, ns, sa) {
				data[login.PodKey(string(pod.UID))] = ns + "/" + pod.Name
			}
		}
	}
	cm := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.IssuerNamespace, Name: name}, cm)
	labels := materialisedLabels(p, v1alpha1.ComponentSubjects)
	switch {
	case isNotFound(err):
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: r.IssuerNamespace, Name: name, Labels: labels}, Data: data}
		if err := r.Client.Create(ctx, cm); err != nil {
			return wrapf(err, "create %s", name)
		}
		return nil
	case err != nil:
		return wrapf(err, "get %s", name)
	case maps.Equal(cm.Data, data) && maps.Equal(cm.Labels, labels):
		return nil
	}
	updated := cm.DeepCopy()
	updated.Data, updated.Labels = data, labels
	if err := r.Client.Update(ctx, updated); err != nil {
		return wrapf(err, "update %s", name)
	}
	log.FromContext(ctx).V(1).Info("Updated the ServiceAccounts and Pods a policy's sessions may be bound to", "configMap", name, "entries", len(data))
	return nil
}

func allowedServiceAccount(p *v1alpha1.TokenPolicy, ns, name string) bool {
	return slices.ContainsFunc(p.Spec.Login.ServiceAccounts, func(ref v1alpha1.ServiceAccountRef) bool { return ref.Matches(ns, name) })
}

// deleteConfigMap deletes ConfigMap name of the issuer's namespace, if it exists.
func (r *TokenPolicyReconciler) deleteConfigMap(ctx context.Context, name string) error {
	cm := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.IssuerNamespace, Name: name}, cm)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return client.IgnoreNotFound(r.Client.Delete(ctx, cm, client.Preconditions{UID: &cm.UID}))
}

// policiesForSubject maps a ServiceAccount or Pod to the policies that let the ServiceAccounts of its
// namespace log in.
func (r *TokenPolicyReconciler) policiesForSubject(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1alpha1.TokenPolicyList
	if err := r.Client.List(ctx, &list, client.MatchingFields{loginNamespaceIndex: obj.GetNamespace()}); err != nil {
		log.FromContext(ctx).Error(err, "Listing TokenPolicies for a ServiceAccount or Pod failed")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

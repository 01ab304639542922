package controllers

import (
	"context"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/login"
)

// reconcileLogin validates the policy's users Secret and materialises its entries for the issuer, or, when
// password login is off or the Secret cannot be used, deletes the copy: password login then stops at once,
// rather than going on with the last good copy.
//
// A users Secret is always one someone brought, so it must list the policy in its
// tokenwarden.io/allowed-policies annotation: otherwise any policy of the namespace could name another's
// users Secret and add its own password-guessing budget for the same accounts.
func (r *TokenPolicyReconciler) reconcileLogin(ctx context.Context, s *scope) error {
	p := s.policy
	copyName := p.IssuerUsersSecretName()
	name := p.UsersSecretName()
	if name == "" {
		s.login = "Password login is off"
		return r.unmaterialise(ctx, copyName)
	}
	secret, err := r.secrets.get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: name})
	switch {
	case isNotFound(err):
		s.loginErr = &problem{reason: v1alpha1.ReasonSecretNotFound, err: fmt.Errorf(
			"users Secret %s does not exist in namespace %s: create it with one entry per user (username: bcrypt hash) and the annotation %s: %s",
			name, p.Namespace, v1alpha1.AnnotationAllowedPolicies, p.Name)}
	case err != nil:
		return wrapf(err, "get users secret %s", name)
	case !v1alpha1.AllowsPolicy(secret.Annotations[v1alpha1.AnnotationAllowedPolicies], p.Name):
		s.loginErr = &problem{reason: v1alpha1.ReasonSecretNotPermitted, err: fmt.Errorf(
			"users Secret %s does not allow this policy: add the annotation %s: %s to it (a comma-separated list of the TokenPolicies that may log its users in)",
			name, v1alpha1.AnnotationAllowedPolicies, p.Name)}
	default:
		if err := login.Validate(secret.Data); err != nil {
			s.loginErr = &problem{reason: v1alpha1.ReasonSecretMalformed, err: fmt.Errorf("users Secret %s: %w", name, err)}
		}
	}
	if s.loginErr != nil {
		r.event(p, corev1.EventTypeWarning, v1alpha1.EventInvalidUsersSecret, "LoadUsers", "%v; password login is off until it is fixed", s.loginErr.err)
		return r.unmaterialise(ctx, copyName)
	}
	s.login = fmt.Sprintf("Password login is on for the %d users of Secret %s", len(secret.Data), name)
	return r.materialise(ctx, p, copyName, v1alpha1.ComponentUsers, maps.Clone(secret.Data),
		map[string]string{v1alpha1.AnnotationSource: sourceOf(secret)})
}

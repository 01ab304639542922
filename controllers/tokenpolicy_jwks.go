package controllers

import (
	"context"
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tokenwarden/tokenwarden/internal/keys"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// JWKSKey is the data key of the JWKS ConfigMap.
const JWKSKey = "jwks.json"

func jwksName(p *v1alpha1.TokenPolicy) string { return p.Name + "-jwks" }

// publishedKeyIDs reads the kids the JWKS ConfigMap publishes now.
func (r *TokenPolicyReconciler) publishedKeyIDs(ctx context.Context, s *scope) (map[string]bool, error) {
	cm := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.policy.Namespace, Name: jwksName(s.policy)}, cm)
	if isNotFound(err) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, wrapf(err, "get JWKS configmap")
	}
	var set keys.JWKS
	if err := json.Unmarshal([]byte(cm.Data[JWKSKey]), &set); err != nil {
		return map[string]bool{}, nil // rewritten by this pass
	}
	out := make(map[string]bool, len(set.Keys))
	for _, k := range set.Keys {
		out[k.KeyID] = true
	}
	return out, nil
}

// reconcileJWKS publishes the public keys of every key in the set: Next, Active and Retired alike.
func (r *TokenPolicyReconciler) reconcileJWKS(ctx context.Context, s *scope) error {
	if s.keySet == nil {
		return nil // nothing loaded: leave what resource servers have as it is
	}
	set, err := s.keySet.PublicJWKS()
	if err != nil {
		return err
	}
	doc, err := set.Marshal()
	if err != nil {
		return err
	}
	p := s.policy
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: jwksName(p)}}
	_, err = controllerutil.CreateOrPatch(ctx, r.Client, cm, func() error {
		cm.Labels = mergeLabels(cm.Labels, ownedLabels(p, v1alpha1.ComponentJWKS))
		cm.Data = map[string]string{JWKSKey: string(doc)}
		return controllerutil.SetControllerReference(p, cm, r.Scheme)
	})
	if err != nil {
		return wrapf(err, "write JWKS configmap %s", cm.Name)
	}
	s.jwksName = cm.Name
	return nil
}

func mergeLabels(have, want map[string]string) map[string]string {
	if have == nil {
		have = make(map[string]string, len(want))
	}
	for k, v := range want {
		have[k] = v
	}
	return have
}

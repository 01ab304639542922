package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// patchStatus writes what the pass found as one status patch. observedGeneration moves only when the
// pass succeeded; conditions always say what is known.
func (r *TokenPolicyReconciler) patchStatus(ctx context.Context, original *v1alpha1.TokenPolicy, s *scope, passErr error) error {
	p := s.policy
	st := &p.Status
	gen := p.Generation
	st.IssuerURL = p.IssuerURL(r.IssuerURL)
	st.IssuerNamespace, st.ObjectPrefix = r.IssuerNamespace, p.ObjectPrefix()
	st.JWKSConfigMap = s.jwksName
	if s.keySet != nil {
		st.ActiveKeyID = s.keySet.Active.ID
		st.Keys = s.keyStatus
	}
	if s.shardStats != nil {
		st.Shards = s.shardStats
		var revoked int32
		for _, sh := range s.shardStats {
			revoked += sh.RevokedSessions
		}
		st.RevokedSessions = &revoked
	}

	keysReady := condition(v1alpha1.ConditionKeysReady, gen, metav1.ConditionTrue, v1alpha1.ReasonKeysAvailable,
		"Signing key "+st.ActiveKeyID+" is active, published and handed to the issuer")
	switch {
	case s.keysErr != nil:
		keysReady = condition(v1alpha1.ConditionKeysReady, gen, metav1.ConditionFalse, s.keysErr.reason, s.keysErr.err.Error())
	case s.keySet == nil && passErr != nil:
		keysReady = condition(v1alpha1.ConditionKeysReady, gen, metav1.ConditionUnknown, v1alpha1.ReasonReconcileError, passErr.Error())
	}
	loginReady := condition(v1alpha1.ConditionLoginReady, gen, metav1.ConditionTrue, v1alpha1.ReasonLoginAvailable, s.login)
	switch {
	case s.loginErr != nil:
		loginReady = condition(v1alpha1.ConditionLoginReady, gen, metav1.ConditionFalse, s.loginErr.reason, s.loginErr.err.Error())
	case s.login == "" && passErr != nil:
		loginReady = condition(v1alpha1.ConditionLoginReady, gen, metav1.ConditionUnknown, v1alpha1.ReasonReconcileError, passErr.Error())
	case s.login == "":
		loginReady = condition(v1alpha1.ConditionLoginReady, gen, metav1.ConditionUnknown, v1alpha1.ReasonReconcileError, "Not checked yet")
	case p.UsersSecretName() == "":
		loginReady.Reason = v1alpha1.ReasonPasswordLoginOff
	}
	storeReady := condition(v1alpha1.ConditionRevocationStoreReady, gen, metav1.ConditionTrue, v1alpha1.ReasonShardsAvailable,
		"Every shard exists in namespace "+r.IssuerNamespace+" and has room")
	switch {
	case s.shardsErr != nil:
		storeReady = condition(v1alpha1.ConditionRevocationStoreReady, gen, metav1.ConditionFalse, v1alpha1.ReasonShardNearBudget, s.shardsErr.Error())
	case s.shardStats == nil && passErr != nil:
		storeReady = condition(v1alpha1.ConditionRevocationStoreReady, gen, metav1.ConditionUnknown, v1alpha1.ReasonReconcileError, passErr.Error())
	}
	ready := condition(v1alpha1.ConditionReady, gen, metav1.ConditionTrue, v1alpha1.ReasonReady,
		"The issuer has this policy's keys, login material and revocation state: tokens can be issued, refreshed and revoked")
	switch {
	case keysReady.Status != metav1.ConditionTrue:
		ready = condition(v1alpha1.ConditionReady, gen, keysReady.Status, v1alpha1.ReasonKeysNotReady, keysReady.Message)
	case loginReady.Status != metav1.ConditionTrue:
		ready = condition(v1alpha1.ConditionReady, gen, loginReady.Status, v1alpha1.ReasonLoginNotReady, loginReady.Message)
	case storeReady.Status != metav1.ConditionTrue:
		ready = condition(v1alpha1.ConditionReady, gen, storeReady.Status, v1alpha1.ReasonRevocationStoreFailed, storeReady.Message)
	case passErr != nil:
		ready = condition(v1alpha1.ConditionReady, gen, metav1.ConditionUnknown, v1alpha1.ReasonReconcileError, passErr.Error())
	}
	for _, c := range []metav1.Condition{keysReady, loginReady, storeReady, ready} {
		meta.SetStatusCondition(&st.Conditions, c)
	}
	if passErr == nil {
		st.ObservedGeneration = gen
	}
	if equality.Semantic.DeepEqual(original.Status, *st) {
		return nil
	}
	return client.IgnoreNotFound(r.Client.Status().Patch(ctx, p, client.MergeFrom(original)))
}

func condition(t string, gen int64, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen}
}

package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// NearBudget is the fill, as a fraction of the budget, at which RevocationStoreReady turns False: before
// writes start failing, so that someone can raise the shard count in time.
const NearBudget = configmap.NearBudget

// DefaultCompactBytes is the least data of sealed segments a policy merges into its bases at once.
const DefaultCompactBytes = configmap.DefaultCompactBytes

// reconcileShards has the policy's revocation objects in the issuer's namespace kept (configmap.Keeper:
// created, merged, drained, expired records dropped, the previous layout's records moved in) and reports
// their fill.
func (r *TokenPolicyReconciler) reconcileShards(ctx context.Context, s *scope) error {
	p := s.policy
	rep, err := r.Revocations.Reconcile(ctx, configmap.For(p, r.IssuerNamespace), p, s.now)
	if err != nil {
		return wrapf(err, "keep the revocation objects")
	}
	if rep.Migrated > 0 {
		r.event(p, corev1.EventTypeNormal, v1alpha1.EventRevocationsMoved, "MoveRevocations",
			"Moved the records of %d revocation objects into namespace %s, where the issuer reads them", rep.Migrated, r.IssuerNamespace)
	}
	s.shardStats = []v1alpha1.ShardStatus{}
	for _, sh := range rep.Shards {
		s.shardStats = append(s.shardStats, v1alpha1.ShardStatus{Name: sh.Name, Records: int32(sh.Stats.Records),
			Bytes: int64(sh.Stats.Bytes), RevokedSessions: int32(sh.Stats.RevokedSessions)})
	}
	if !rep.Next.IsZero() {
		s.requeueAt(rep.Next)
	}
	switch {
	case r.ShardStatusPeriod > 0:
		s.requeueAt(s.now.Add(r.ShardStatusPeriod))
	case rep.Waiting:
		s.requeueAt(s.now.Add(time.Minute))
	}
	if len(rep.NearBudget) > 0 {
		s.shardsErr = fmt.Errorf("shards near their byte budget: %s; raise spec.revocation.shards", strings.Join(rep.NearBudget, ", "))
		r.event(p, corev1.EventTypeWarning, v1alpha1.EventShardNearBudget, "CheckShards", "%v", s.shardsErr)
	}
	return nil
}

package controllers

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// NearBudget is the fill, as a fraction of the budget, at which RevocationStoreReady turns False: before
// writes start failing, so that someone can raise the shard count in time.
const NearBudget = 0.9

// reconcileShards creates the policy's shard ConfigMaps, deletes surplus ones once they have drained, and
// reports each shard's fill. A session's record stays in the shard it was placed in at login for the
// session's whole life, so a changed shard count moves nothing: new sessions spread over the new count,
// and a surplus shard drains as its sessions end.
func (r *TokenPolicyReconciler) reconcileShards(ctx context.Context, s *scope) error {
	p := s.policy
	var list corev1.ConfigMapList
	if err := r.Client.List(ctx, &list, client.InNamespace(p.Namespace), client.MatchingLabels{
		v1alpha1.LabelPolicy: p.Name, v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}); err != nil {
		return wrapf(err, "list revocation shards")
	}
	want := int(p.Spec.Revocation.Shards)
	bases, journals := map[int]*corev1.ConfigMap{}, map[int]*corev1.ConfigMap{}
	for i := range list.Items {
		cm := &list.Items[i]
		if !metav1.IsControlledBy(cm, p) {
			continue
		}
		if idx, ok := shardIndex(p.Name, cm.Name); ok {
			bases[idx] = cm
		} else if idx, ok := shardIndex(p.Name, strings.TrimSuffix(cm.Name, revocation.JournalSuffix)); ok && strings.HasSuffix(cm.Name, revocation.JournalSuffix) {
			journals[idx] = cm
		}
	}
	// Every shard within the count, and every surplus one still draining, has its base and its journal.
	for i := range want {
		if bases[i] == nil {
			bases[i] = &corev1.ConfigMap{}
		}
	}
	for i, base := range bases {
		if base.Name == "" {
			cm, err := r.createShardObject(ctx, p, revocation.ShardName(p.Name, i))
			if err != nil {
				return err
			}
			bases[i] = cm
		}
		if journals[i] == nil {
			cm, err := r.createShardObject(ctx, p, revocation.JournalName(p.Name, i))
			if err != nil {
				return err
			}
			journals[i] = cm
		}
	}

	indexes := make([]int, 0, len(bases))
	for i := range bases {
		indexes = append(indexes, i)
	}
	sort.Ints(indexes)
	var full []string
	for _, i := range indexes {
		cm, err := r.dropExpired(ctx, s, bases[i])
		if err != nil {
			return err
		}
		journal, err := r.dropExpired(ctx, s, journals[i])
		if err != nil {
			return err
		}
		st := revocation.MergedStats(cm.Data, journal.Data)
		deleted, err := r.drain(ctx, s, cm, journal, i >= want, st)
		if err != nil {
			return err
		}
		if deleted {
			continue
		}
		s.shardStats = append(s.shardStats, v1alpha1.ShardStatus{Name: cm.Name, Records: int32(st.Records),
			Bytes: int64(st.Bytes), RevokedSessions: int32(st.RevokedSessions)})
		if i < want && float64(st.Bytes) >= NearBudget*float64(r.budget()) {
			full = append(full, fmt.Sprintf("%s (%d of %d bytes)", cm.Name, st.Bytes, r.budget()))
		}
	}
	if r.ShardStatusPeriod > 0 {
		s.requeueAt(s.now.Add(r.ShardStatusPeriod))
	}
	if len(full) > 0 {
		s.shardsErr = fmt.Errorf("shards near their byte budget: %s; raise spec.revocation.shards", strings.Join(full, ", "))
		r.event(p, corev1.EventTypeWarning, v1alpha1.EventShardNearBudget, "CheckShards", "%v", s.shardsErr)
	}
	return nil
}

func (r *TokenPolicyReconciler) budget() int {
	if r.ShardBudget == 0 {
		return DefaultShardBudget
	}
	return r.ShardBudget
}

// shardIndex parses the index out of a shard name of policy.
func shardIndex(policy, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, policy+"-revocations-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	return i, err == nil && i >= 0 && revocation.ShardName(policy, i) == name
}

// dropExpired removes the records of a shard that have expired, through the one shard-writing path, and
// asks for another pass when the next record expires.
func (r *TokenPolicyReconciler) dropExpired(ctx context.Context, s *scope, cm *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	expired := false
	for k, v := range cm.Data {
		if revocation.Expired(k, v, s.now) {
			expired = true
		} else if exp, ok := revocation.ExpiryOf(k, v); ok {
			s.requeueAt(exp)
		}
	}
	if !expired {
		return cm, nil
	}
	written, _, err := configmap.UpdateShard(ctx, r.Client, r.APIReader, client.ObjectKeyFromObject(cm), cm, func(data map[string]string) (bool, error) {
		changed := false
		for k, v := range data {
			if revocation.Expired(k, v, s.now) {
				delete(data, k)
				changed = true
			}
		}
		return changed, nil
	})
	if err != nil {
		return nil, wrapf(err, "drop expired records")
	}
	return written, nil
}

// drain handles a shard beyond the shard count: it marks when the shard became surplus, and deletes it
// once it is empty and every session that may have been placed in it has ended (one refresh lifetime
// after it became surplus; a session placed there that never refreshed has no record in it yet). A shard
// back within the count loses the mark.
func (r *TokenPolicyReconciler) drain(ctx context.Context, s *scope, cm, journal *corev1.ConfigMap, surplus bool, st revocation.ShardStats) (bool, error) {
	since, marked := cm.Annotations[v1alpha1.AnnotationSurplusSince]
	if surplus == marked {
		if !surplus || st.Records > 0 {
			return false, nil
		}
		t, err := time.Parse(time.RFC3339, since)
		if err != nil {
			t = s.now // a mangled mark restarts the wait rather than deleting early
		}
		end := t.Add(s.policy.Spec.RefreshToken.Lifetime.Duration + RetirementLeeway)
		if s.now.Before(end) {
			s.requeueAt(end)
			return false, nil
		}
		// The journal goes first: while it exists, an issuer may still write to it.
		for _, obj := range []*corev1.ConfigMap{journal, cm} {
			err = r.Client.Delete(ctx, obj, client.Preconditions{ResourceVersion: &obj.ResourceVersion})
			if client.IgnoreNotFound(err) != nil {
				return false, wrapf(err, "delete drained revocation shard %s", obj.Name)
			}
		}
		return true, nil
	}
	patched := cm.DeepCopy()
	if surplus {
		if patched.Annotations == nil {
			patched.Annotations = map[string]string{}
		}
		patched.Annotations[v1alpha1.AnnotationSurplusSince] = s.now.UTC().Format(time.RFC3339)
		s.requeueAt(s.now.Add(s.policy.Spec.RefreshToken.Lifetime.Duration + RetirementLeeway))
	} else {
		delete(patched.Annotations, v1alpha1.AnnotationSurplusSince)
	}
	if err := r.Client.Patch(ctx, patched, client.MergeFrom(cm)); err != nil {
		return false, wrapf(err, "mark revocation shard %s", cm.Name)
	}
	return false, nil
}

func (r *TokenPolicyReconciler) createShardObject(ctx context.Context, p *v1alpha1.TokenPolicy, name string) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: name,
		Labels: ownedLabels(p, v1alpha1.ComponentRevocations)}, Data: map[string]string{}}
	if err := controllerutil.SetControllerReference(p, cm, r.Scheme); err != nil {
		return nil, err
	}
	if err := r.Client.Create(ctx, cm); err != nil {
		return nil, wrapf(err, "create revocation shard %s", name)
	}
	return cm, nil
}

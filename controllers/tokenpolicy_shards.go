package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// NearBudget is the fill, as a fraction of the budget, at which RevocationStoreReady turns False: before
// writes start failing, so that someone can raise the shard count in time.
const NearBudget = 0.9

// reconcileShards creates the policy's shard bases and its journal, merges sealed segments into the bases
// once they hold enough, deletes surplus shards once they have drained, and reports each shard's fill. A
// session's record stays in the shard it was placed in at login for the session's whole life, so a
// changed shard count moves nothing: new sessions spread over the new count, and a surplus shard drains
// as its sessions end.
func (r *TokenPolicyReconciler) reconcileShards(ctx context.Context, s *scope) error {
	p := s.policy
	var list corev1.ConfigMapList
	if err := r.Client.List(ctx, &list, client.InNamespace(p.Namespace), client.MatchingLabels{
		v1alpha1.LabelPolicy: p.Name, v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}); err != nil {
		return wrapf(err, "list revocation shards")
	}
	owned := list.Items[:0:0]
	for i := range list.Items {
		if metav1.IsControlledBy(&list.Items[i], p) {
			owned = append(owned, list.Items[i])
		}
	}
	objs := configmap.Classify(p.Name, owned)
	want := int(p.Spec.Revocation.Shards)
	if objs.Journal == nil {
		cm, err := r.createShardObject(ctx, p, revocation.JournalName(p.Name), 0)
		if err != nil {
			return err
		}
		objs.Journal = cm
	}
	// A new base starts at the journal's fold number: no segment up to it holds entries of a new shard,
	// and readers must not look for segments merged and deleted before it existed.
	for i := range want {
		if objs.Bases[i] == nil {
			cm, err := r.createShardObject(ctx, p, revocation.ShardName(p.Name, i), revocation.FoldSeq(objs.Journal.Data))
			if err != nil {
				return err
			}
			objs.Bases[i] = cm
		}
	}
	if err := r.compact(ctx, s, objs); err != nil {
		return err
	}

	key := client.ObjectKeyFromObject(p)
	pending := objs.Pending()
	var full []string
	for _, i := range slices.Sorted(maps.Keys(objs.Bases)) {
		cm := objs.Bases[i]
		sum := r.summaries.of(key, cm)
		if !sum.earliest.IsZero() && !s.now.Before(sum.earliest) {
			var err error
			if cm, err = r.dropExpired(ctx, s, cm); err != nil {
				return err
			}
			sum = r.summaries.of(key, cm)
		}
		if !sum.earliest.IsZero() {
			s.requeueAt(sum.earliest)
		}
		st := revocation.MergedStatsFrom(sum.stats, cm.Data, pending[i])
		deleted, err := r.drain(ctx, s, cm, i >= want, st)
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
	journal, err := r.dropExpired(ctx, s, objs.Journal)
	if err != nil {
		return err
	}
	if _, earliest := revocation.Summarize(journal.Data); !earliest.IsZero() {
		s.requeueAt(earliest)
	}
	r.summaries.keep(key, objs.Bases)
	if r.ShardStatusPeriod > 0 {
		s.requeueAt(s.now.Add(r.ShardStatusPeriod))
	}
	if len(full) > 0 {
		s.shardsErr = fmt.Errorf("shards near their byte budget: %s; raise spec.revocation.shards", strings.Join(full, ", "))
		r.event(p, corev1.EventTypeWarning, v1alpha1.EventShardNearBudget, "CheckShards", "%v", s.shardsErr)
	}
	return nil
}

// DefaultCompactBytes is the least data of sealed segments a policy merges into its bases at once.
const DefaultCompactBytes = 256 << 10

// compact merges the policy's sealed segments into its bases once they hold at least half as much as the
// bases (and DefaultCompactBytes): each merge rewrites every base, so merging at half their size sends
// about three bytes for every byte of record the issuer sealed, whatever the number of sessions.
func (r *TokenPolicyReconciler) compact(ctx context.Context, s *scope, objs configmap.Objects) error {
	segments := objs.SegmentBytes()
	if segments == 0 {
		return nil
	}
	bases := 0
	for _, cm := range objs.Bases {
		bases += r.summaries.of(client.ObjectKeyFromObject(s.policy), cm).stats.Bytes
	}
	least := r.CompactBytes
	if least == 0 {
		least = DefaultCompactBytes
	}
	if segments < max(least, bases/2) {
		if r.ShardStatusPeriod == 0 {
			s.requeueAt(s.now.Add(time.Minute))
		}
		return nil
	}
	res, err := configmap.Compact(ctx, r.Client, r.APIReader, client.ObjectKeyFromObject(s.policy), s.now)
	compactions.record(client.ObjectKeyFromObject(s.policy).String(), res, err)
	if err != nil {
		return wrapf(err, "merge sealed segments")
	}
	log.FromContext(ctx).V(1).Info("Merged sealed segments into the shard bases", "segments", res.Segments, "writes", res.Writes, "bytes", res.BytesWritten)
	return nil
}

// summaries remembers what reading every record of a base found, per version of the base: bases change only
// when segments are merged into them, so a status pass reads the records of the journal and segments, not
// the hundreds of thousands in the bases.
type summaries struct {
	mu       sync.Mutex
	byPolicy map[types.NamespacedName]map[types.UID]summary
}

type summary struct {
	resourceVersion string
	stats           revocation.ShardStats
	earliest        time.Time // the earliest expiry of a record (zero: none)
}

// of returns the summary of cm, a base of policy, computing it once per resourceVersion.
func (c *summaries) of(policy types.NamespacedName, cm *corev1.ConfigMap) summary {
	c.mu.Lock()
	sum, ok := c.byPolicy[policy][cm.UID]
	c.mu.Unlock()
	if ok && sum.resourceVersion == cm.ResourceVersion && cm.ResourceVersion != "" {
		return sum
	}
	sum.resourceVersion = cm.ResourceVersion
	sum.stats, sum.earliest = revocation.Summarize(cm.Data)
	c.mu.Lock()
	if c.byPolicy == nil {
		c.byPolicy = map[types.NamespacedName]map[types.UID]summary{}
	}
	if c.byPolicy[policy] == nil {
		c.byPolicy[policy] = map[types.UID]summary{}
	}
	c.byPolicy[policy][cm.UID] = sum
	c.mu.Unlock()
	return sum
}

// keep drops the summaries of policy's bases that are gone, given those that remain.
func (c *summaries) keep(policy types.NamespacedName, bases map[int]*corev1.ConfigMap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := map[types.UID]summary{}
	for _, cm := range bases {
		if sum, ok := c.byPolicy[policy][cm.UID]; ok {
			kept[cm.UID] = sum
		}
	}
	if c.byPolicy != nil {
		c.byPolicy[policy] = kept
	}
}

func (r *TokenPolicyReconciler) budget() int {
	if r.ShardBudget == 0 {
		return DefaultShardBudget
	}
	return r.ShardBudget
}

// dropExpired removes the records of a shard object that have expired, through the one shard-writing path.
func (r *TokenPolicyReconciler) dropExpired(ctx context.Context, s *scope, cm *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	expired := false
	for k, v := range cm.Data {
		if revocation.Expired(k, v, s.now) {
			expired = true
			break
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
func (r *TokenPolicyReconciler) drain(ctx context.Context, s *scope, cm *corev1.ConfigMap, surplus bool, st revocation.ShardStats) (bool, error) {
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
		err = r.Client.Delete(ctx, cm, client.Preconditions{ResourceVersion: &cm.ResourceVersion})
		if client.IgnoreNotFound(err) != nil {
			return false, wrapf(err, "delete drained revocation shard %s", cm.Name)
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

func (r *TokenPolicyReconciler) createShardObject(ctx context.Context, p *v1alpha1.TokenPolicy, name string, fold uint64) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: name,
		Labels: ownedLabels(p, v1alpha1.ComponentRevocations)}, Data: map[string]string{}}
	if fold > 0 {
		cm.Data[revocation.FoldKey] = strconv.FormatUint(fold, 10)
	}
	if err := controllerutil.SetControllerReference(p, cm, r.Scheme); err != nil {
		return nil, err
	}
	if err := r.Client.Create(ctx, cm); err != nil {
		return nil, wrapf(err, "create revocation shard %s", name)
	}
	return cm, nil
}

package configmap

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// DefaultCompactBytes is the least data of sealed segments a policy merges into its bases at once.
const DefaultCompactBytes = 256 << 10

// NearBudget is the fill, as a fraction of the budget, at which a shard is reported near its budget: before
// writes start failing, so that someone can raise the shard count in time.
const NearBudget = 0.9

// RetirementLeeway is added to the time a surplus shard waits for its sessions to end, for clock skew.
const RetirementLeeway = time.Minute

// Keeper does to policies' revocation objects everything that is not an issuer's decision: it creates them,
// moves the records of the layout before this one into them, merges sealed segments into the bases, drops
// expired records, drains surplus shards, reports fill, records the revocations operators file, and deletes
// the objects with their policy. The controller runs it.
type Keeper struct {
	// Client writes, and reads from the cache.
	Client client.Client
	// Reader reads around the cache, for compare-and-swap writes.
	Reader client.Reader
	// Budget is the byte budget of one shard; 0 means DefaultBudget.
	Budget int
	// CompactBytes is the least data of sealed segments merged at once; 0 means DefaultCompactBytes.
	CompactBytes int
	// Compacted, if set, is told of every merge.
	Compacted func(h Policy, res CompactResult, err error)

	summaries summaries
}

// ShardFill is one shard's fill: its base and its entries in the journal and the sealed segments.
type ShardFill struct {
	Name  string
	Stats revocation.ShardStats
}

// Report is what a Reconcile found and did.
type Report struct {
	// Shards are the shards, by index, surplus ones not yet deleted included.
	Shards []ShardFill
	// NearBudget lists the shards within the count filled to NearBudget or more, as "name (n of m bytes)".
	NearBudget []string
	// Next is the earliest time something is due (a record expires, a surplus shard may go); zero if none.
	Next time.Time
	// Waiting says that sealed segments wait for a merge that has not reached its threshold yet.
	Waiting bool
	// Migrated counts the objects of the previous layout whose records were moved and that were deleted.
	Migrated int
}

func (r *Report) due(t time.Time) {
	if !t.IsZero() && (r.Next.IsZero() || t.Before(r.Next)) {
		r.Next = t
	}
}

func (k *Keeper) budget() int {
	if k.Budget == 0 {
		return DefaultBudget
	}
	return k.Budget
}

// Reconcile brings the revocation objects of policy p (whose handle is h) to its spec at now:
//   - the records of legacy objects (the layout before this one, see Legacy) move into the bases first, and
//     the journal is created only after them, so that no issuer decides before every record is in place;
//   - sealed segments are merged into the bases once they hold enough (Compact);
//   - expired records are dropped from the bases and the journal;
//   - a base beyond the count is marked surplus, and deleted once empty and a lifetime later.
//
// A session's record stays in the shard it was placed in at login for the session's whole life, so a
// changed shard count moves nothing: new sessions spread over the new count, and a surplus shard drains as
// its sessions end.
func (k *Keeper) Reconcile(ctx context.Context, h Policy, p *v1alpha1.TokenPolicy, now time.Time) (Report, error) {
	var rep Report
	shards, lifetime := int(p.Spec.Revocation.Shards), p.Spec.RefreshToken.Lifetime.Duration
	objs, err := h.List(ctx, k.Client)
	if err != nil {
		return rep, err
	}
	legacy, err := Legacy(ctx, k.Client, p)
	if err != nil {
		return rep, err
	}
	if len(legacy.all()) > 0 {
		if rep.Migrated, err = k.migrate(ctx, h, p, legacy, now); err != nil {
			return rep, err
		}
		if objs, err = h.List(ctx, k.Reader); err != nil {
			return rep, err
		}
	}
	// A new base starts at the journal's fold number: no segment up to it holds entries of a new shard, and
	// readers must not look for segments merged and deleted before it existed.
	var fold uint64
	if objs.Journal != nil {
		fold = revocation.FoldSeq(objs.Journal.Data)
	}
	for i := range shards {
		if objs.Bases[i] == nil {
			if objs.Bases[i], err = k.create(ctx, h, h.BaseName(i), fold); err != nil {
				return rep, err
			}
		}
	}
	if objs.Journal == nil {
		if objs.Journal, err = k.create(ctx, h, h.JournalName(), fold); err != nil {
			return rep, err
		}
	}
	if err := k.recordLifetime(ctx, objs.Journal, lifetime, now); err != nil {
		return rep, err
	}
	// Surplus shards wait for every session that may have been placed in them, under the longest lifetime.
	lifetime = LongestLifetime(objs.Journal, lifetime, now)
	if rep.Waiting, err = k.compact(ctx, h, objs, now); err != nil {
		return rep, err
	}

	pending := objs.Pending()
	for _, i := range slices.Sorted(maps.Keys(objs.Bases)) {
		cm := objs.Bases[i]
		sum := k.summaries.of(h.Key, cm)
		if !sum.earliest.IsZero() && !now.Before(sum.earliest) {
			if cm, err = k.dropExpired(ctx, cm, now); err != nil {
				return rep, err
			}
			sum = k.summaries.of(h.Key, cm)
		}
		rep.due(sum.earliest)
		st := revocation.MergedStatsFrom(sum.stats, cm.Data, pending[i])
		deleted, err := k.drain(ctx, cm, i >= shards, st, lifetime, now, &rep)
		if err != nil {
			return rep, err
		}
		if deleted {
			continue
		}
		rep.Shards = append(rep.Shards, ShardFill{Name: cm.Name, Stats: st})
		if i < shards && float64(st.Bytes) >= NearBudget*float64(k.budget()) {
			rep.NearBudget = append(rep.NearBudget, fmt.Sprintf("%s (%d of %d bytes)", cm.Name, st.Bytes, k.budget()))
		}
	}
	journal, err := k.dropExpired(ctx, objs.Journal, now)
	if err != nil {
		return rep, err
	}
	_, earliest := revocation.Summarize(journal.Data)
	rep.due(earliest)
	k.summaries.keep(h.Key, objs.Bases)
	return rep, nil
}

// compact merges the policy's sealed segments into its bases once they hold at least half as much as the
// bases (and CompactBytes): each merge rewrites every base, so merging at half their size sends about three
// bytes for every byte of record the issuer sealed, whatever the number of sessions. It reports whether
// segments wait below that threshold.
func (k *Keeper) compact(ctx context.Context, h Policy, objs Objects, now time.Time) (bool, error) {
	segments := objs.SegmentBytes()
	if segments == 0 {
		return false, nil
	}
	bases := 0
	for _, cm := range objs.Bases {
		bases += k.summaries.of(h.Key, cm).stats.Bytes
	}
	least := k.CompactBytes
	if least == 0 {
		least = DefaultCompactBytes
	}
	if segments < max(least, bases/2) {
		return true, nil
	}
	res, err := h.Compact(ctx, k.Client, k.Reader, now)
	if k.Compacted != nil {
		k.Compacted(h, res, err)
	}
	if err != nil {
		return false, fmt.Errorf("merge sealed segments: %w", err)
	}
	return false, nil
}

// dropExpired removes the records of a revocation object that have expired, through the one shard-writing
// path.
func (k *Keeper) dropExpired(ctx context.Context, cm *corev1.ConfigMap, now time.Time) (*corev1.ConfigMap, error) {
	expired := false
	for key, v := range cm.Data {
		if revocation.Expired(key, v, now) {
			expired = true
			break
		}
	}
	if !expired {
		return cm, nil
	}
	written, _, err := UpdateShard(ctx, k.Client, k.Reader, client.ObjectKeyFromObject(cm), cm, func(data map[string]string) (bool, error) {
		changed := false
		for key, v := range data {
			if revocation.Expired(key, v, now) {
				delete(data, key)
				changed = true
			}
		}
		return changed, nil
	})
	if err != nil {
		return nil, fmt.Errorf("drop expired records of %s: %w", cm.Name, err)
	}
	return written, nil
}

// drain handles a shard beyond the shard count: it marks when the shard became surplus, and deletes it once
// it is empty and every session that may have been placed in it has ended (one lifetime after it became
// surplus; a session placed there that never refreshed has no record in it yet). A shard back within the
// count loses the mark.
func (k *Keeper) drain(ctx context.Context, cm *corev1.ConfigMap, surplus bool, st revocation.ShardStats, lifetime time.Duration, now time.Time, rep *Report) (bool, error) {
	since, marked := cm.Annotations[v1alpha1.AnnotationSurplusSince]
	if surplus == marked {
		if !surplus || st.Records > 0 {
			return false, nil
		}
		t, err := time.Parse(time.RFC3339, since)
		if err != nil {
			t = now // a mangled mark restarts the wait rather than deleting early
		}
		end := t.Add(lifetime + RetirementLeeway)
		if now.Before(end) {
			rep.due(end)
			return false, nil
		}
		err = k.Client.Delete(ctx, cm, client.Preconditions{ResourceVersion: &cm.ResourceVersion})
		if client.IgnoreNotFound(err) != nil {
			return false, fmt.Errorf("delete drained revocation shard %s: %w", cm.Name, err)
		}
		return true, nil
	}
	patched := cm.DeepCopy()
	if surplus {
		if patched.Annotations == nil {
			patched.Annotations = map[string]string{}
		}
		patched.Annotations[v1alpha1.AnnotationSurplusSince] = now.UTC().Format(time.RFC3339)
		rep.due(now.Add(lifetime + RetirementLeeway))
	} else {
		delete(patched.Annotations, v1alpha1.AnnotationSurplusSince)
	}
	if err := k.Client.Patch(ctx, patched, client.MergeFrom(cm)); err != nil {
		return false, fmt.Errorf("mark revocation shard %s: %w", cm.Name, err)
	}
	return false, nil
}

func (k *Keeper) create(ctx context.Context, h Policy, name string, fold uint64) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: h.Key.Namespace, Name: name, Labels: h.Labels()},
		Data: map[string]string{}}
	if fold > 0 {
		cm.Data[revocation.FoldKey] = strconv.FormatUint(fold, 10)
	}
	if err := k.Client.Create(ctx, cm); err != nil {
		return nil, fmt.Errorf("create revocation object %s: %w", name, err)
	}
	return cm, nil
}

// Delete deletes every revocation object of the policy, the journal first so that no issuer decides or
// seals on it any more. It reports whether none was left when it listed them.
func (k *Keeper) Delete(ctx context.Context, h Policy) (bool, error) {
	objs, err := h.List(ctx, k.Reader)
	if err != nil {
		return false, err
	}
	all := make([]*corev1.ConfigMap, 0, 1+len(objs.Bases)+len(objs.Segments))
	if objs.Journal != nil {
		all = append(all, objs.Journal)
	}
	all = append(all, slices.Collect(maps.Values(objs.Segments))...)
	all = append(all, slices.Collect(maps.Values(objs.Bases))...)
	for _, cm := range all {
		if err := k.Client.Delete(ctx, cm); client.IgnoreNotFound(err) != nil {
			return false, fmt.Errorf("delete revocation object %s: %w", cm.Name, err)
		}
	}
	return len(all) == 0, nil
}

// LongestLifetime is configmap.LongestLifetime of the policy's journal as the cache holds it: the longest
// refresh lifetime of its sessions that may still live.
func (k *Keeper) LongestLifetime(ctx context.Context, h Policy, current time.Duration, now time.Time) (time.Duration, error) {
	journal := &corev1.ConfigMap{}
	if err := k.Client.Get(ctx, h.object(h.JournalName()), journal); err != nil {
		return 0, fmt.Errorf("read the journal of %s: %w", h.Owner, err)
	}
	return LongestLifetime(journal, current, now), nil
}

// RevokeSession records the revocation of a session in the policy's journal, where the issuers'
// compare-and-swap sees it, with the rule the issuer applies (revocation.DecideRevokeSession). It returns
// the name of the session's shard base.
func (k *Keeper) RevokeSession(ctx context.Context, h Policy, req revocation.RevokeSessionRequest) (string, error) {
	key := revocation.SessionKey(req.SessionID)
	return k.revoke(ctx, h, req.Shard, key, func(cur string) (string, error) {
		var rec *revocation.Session
		if cur != "" {
			s, err := revocation.DecodeSession(cur)
			if err != nil {
				return "", fmt.Errorf("session record %s: %w", req.SessionID, err)
			}
			rec = &s
		}
		if next := revocation.DecideRevokeSession(rec, req); next != nil {
			return revocation.EncodeSession(*next), nil
		}
		return "", nil
	})
}

// RevokeSubject records a subject-wide revocation in the policy's journal, with the rule the issuer applies
// (revocation.DecideRevokeSubject). It returns the name of the subject's shard base.
func (k *Keeper) RevokeSubject(ctx context.Context, h Policy, req revocation.RevokeSubjectRequest) (string, error) {
	key := revocation.SubjectKey(req.Subject)
	return k.revoke(ctx, h, req.Shard, key, func(cur string) (string, error) {
		var rec *revocation.Subject
		if cur != "" {
			s, err := revocation.DecodeSubject(cur)
			if err != nil {
				return "", fmt.Errorf("subject record: %w", err)
			}
			rec = &s
		}
		if next := revocation.DecideRevokeSubject(rec, req); next != nil {
			return revocation.EncodeSubject(*next), nil
		}
		return "", nil
	})
}

// revoke writes decide's value for key into the journal, deciding on the record as the shard's base and the
// journal hold it. The record may also be in a sealed segment; revocations only ever move a record towards
// revoked, and revocation.Newer keeps the more revoked of two values, so a record written from an older
// copy cannot undo anything.
func (k *Keeper) revoke(ctx context.Context, h Policy, shard int, key string, decide func(cur string) (string, error)) (string, error) {
	base := &corev1.ConfigMap{}
	if err := k.Reader.Get(ctx, h.object(h.BaseName(shard)), base); err != nil {
		return "", fmt.Errorf("read shard %s: %w", h.BaseName(shard), err) // it may not exist yet: retry
	}
	_, _, err := UpdateShard(ctx, k.Client, k.Reader, h.object(h.JournalName()), nil, func(data map[string]string) (bool, error) {
		next, err := decide(revocation.Newer(key, base.Data[key], data[key]))
		if err != nil || next == "" {
			return false, err
		}
		data[key] = next
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("record in the journal of %s: %w", h.Owner, err)
	}
	return base.Name, nil
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

// Forget drops what the Keeper remembers of a policy that is gone.
func (k *Keeper) Forget(h Policy) {
	k.summaries.mu.Lock()
	defer k.summaries.mu.Unlock()
	delete(k.summaries.byPolicy, h.Key)
}

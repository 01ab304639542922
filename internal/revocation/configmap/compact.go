package configmap

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// Objects are a policy's revocation ConfigMaps, sorted by role.
type Objects struct {
	Bases    map[int]*corev1.ConfigMap
	Journal  *corev1.ConfigMap
	Segments map[uint64]*corev1.ConfigMap
}

// Classify sorts the revocation ConfigMaps of the policy whose object prefix is prefix by role; others are
// left out.
func Classify(prefix string, items []corev1.ConfigMap) Objects {
	o := Objects{Bases: map[int]*corev1.ConfigMap{}, Segments: map[uint64]*corev1.ConfigMap{}}
	for i := range items {
		cm := &items[i]
		switch role, n := revocation.RoleOf(prefix, cm.Name); role {
		case revocation.RoleBase:
			o.Bases[int(n)] = cm
		case revocation.RoleJournal:
			o.Journal = cm
		case revocation.RoleSegment:
			o.Segments[n] = cm
		}
	}
	return o
}

// SegmentBytes is the data the sealed segments hold.
func (o Objects) SegmentBytes() int {
	n := 0
	for _, cm := range o.Segments {
		n += dataSize(cm.Data)
	}
	return n
}

// Pending groups the entries of the journal and the segments by shard, newest first, as the bases would
// hold them after a merge (entries of shards without a base are left out).
func (o Objects) Pending() map[int]map[string]string {
	pending := map[int]map[string]string{}
	add := func(data map[string]string) {
		for k, v := range data {
			shard, ok := revocation.ShardOfEntry(k, v, len(o.Bases))
			if !ok {
				continue // the fold number
			}
			if o.Bases[shard] == nil {
				if !revocation.IsSubjectKey(k) || len(o.Bases) == 0 {
					// A session of a shard that has drained and been deleted: it ended a refresh lifetime
					// ago at least.
					continue
				}
				shard = slices.Min(slices.Collect(maps.Keys(o.Bases))) // readers look in every shard
			}
			if pending[shard] == nil {
				pending[shard] = map[string]string{}
			}
			pending[shard][k] = revocation.Newer(k, pending[shard][k], v)
		}
	}
	for _, seq := range slices.Sorted(maps.Keys(o.Segments)) {
		add(o.Segments[seq].Data)
	}
	if o.Journal != nil {
		add(o.Journal.Data)
	}
	return pending
}

// listSegments reads the policy's sealed segments with reader.
func (h Policy) listSegments(ctx context.Context, reader client.Reader) (map[uint64]*corev1.ConfigMap, error) {
	var list corev1.ConfigMapList
	if err := reader.List(ctx, &list, client.InNamespace(h.Key.Namespace), h.selector(true)); err != nil {
		return nil, fmt.Errorf("list the sealed segments of %s: %w", h.Owner, err)
	}
	return Classify(h.Key.Name, list.Items).Segments, nil
}

// CompactResult says what a Compact did.
type CompactResult struct {
	Segments     int // segments merged and deleted
	Writes       int // API writes, deletions included
	BytesWritten int // data sent in base Updates
}

// Compact merges every sealed segment of a policy into the shard bases and deletes it, dropping the records
// that have expired at now. In order, so that a reader holding the journal always finds every entry:
//  1. the journal's fold number is raised to the newest segment's, so that no segment numbered up to it can
//     be sealed out of the journal from then on (Store.seal checks);
//  2. the segments are listed again, afresh, and every base (listed afresh, by name) takes the entries of
//     its shard from those up to that number (merged by revocation.Newer) and records the number: a base is
//     rewritten even without entries, because readers skip the segments a base's number covers;
//  3. only then are those segments deleted.
//
// Any step can fail or be repeated: a merge of the same segment twice changes nothing.
func (h Policy) Compact(ctx context.Context, c client.Client, reader client.Reader, now time.Time) (CompactResult, error) {
	var res CompactResult
	segments, err := h.listSegments(ctx, reader)
	if err != nil || len(segments) == 0 {
		return res, err
	}
	var through uint64
	for seq := range segments {
		through = max(through, seq)
	}
	_, writes, err := UpdateShard(ctx, c, reader, h.object(h.JournalName()), nil, func(data map[string]string) (bool, error) {
		through = max(through, revocation.FoldSeq(data))
		if revocation.FoldSeq(data) >= through {
			return false, nil
		}
		data[revocation.FoldKey] = strconv.FormatUint(through, 10)
		return true, nil
	})
	res.Writes += writes
	if err != nil {
		return res, fmt.Errorf("raise the journal's fold number: %w", err)
	}
	if segments, err = h.listSegments(ctx, reader); err != nil {
		return res, err
	}
	// The bases by name only (each is read afresh when it is rewritten): a list of their data would be
	// every record of the policy.
	var names metav1.PartialObjectMetadataList
	names.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMapList"))
	if err := reader.List(ctx, &names, client.InNamespace(h.Key.Namespace), h.selector(false)); err != nil {
		return res, fmt.Errorf("list the revocation objects of %s: %w", h.Owner, err)
	}
	pending := Objects{Bases: map[int]*corev1.ConfigMap{}, Segments: map[uint64]*corev1.ConfigMap{}}
	for _, item := range names.Items {
		if role, i := revocation.RoleOf(h.Key.Name, item.Name); role == revocation.RoleBase {
			pending.Bases[int(i)] = &corev1.ConfigMap{ObjectMeta: item.ObjectMeta}
		}
	}
	var merged []*corev1.ConfigMap
	for _, seq := range slices.Sorted(maps.Keys(segments)) {
		if seq <= through {
			merged = append(merged, segments[seq])
			pending.Segments[seq] = segments[seq]
		}
	}
	byShard := pending.Pending() // the merged segments' entries; the journal's stay where they are
	for _, shard := range slices.Sorted(maps.Keys(pending.Bases)) {
		entries := byShard[shard]
		base, writes, err := UpdateShard(ctx, c, reader, client.ObjectKeyFromObject(pending.Bases[shard]), nil, func(data map[string]string) (bool, error) {
			changed := mergeRecords(data, entries, now)
			for k, v := range data {
				if revocation.Expired(k, v, now) {
					delete(data, k)
					changed = true
				}
			}
			if revocation.FoldSeq(data) < through {
				data[revocation.FoldKey] = strconv.FormatUint(through, 10)
				changed = true
			}
			return changed, nil
		})
		res.Writes += writes
		if err != nil {
			return res, fmt.Errorf("merge segments into %s: %w", pending.Bases[shard].Name, err)
		}
		if writes > 0 {
			res.BytesWritten += writes * dataSize(base.Data)
		}
	}
	for _, cm := range merged {
		res.Writes++
		if err := c.Delete(ctx, cm, client.Preconditions{UID: &cm.UID}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
			return res, fmt.Errorf("delete merged segment %s: %w", cm.Name, err)
		}
		res.Segments++
	}
	return res, nil
}

// mergeRecords merges entries that have not expired at now into data, each by revocation.Newer, and
// reports whether data changed.
func mergeRecords(data, entries map[string]string, now time.Time) bool {
	changed := false
	for k, v := range entries {
		if revocation.Expired(k, v, now) {
			continue
		}
		if next := revocation.Newer(k, data[k], v); next != data[k] {
			data[k], changed = next, true
		}
	}
	return changed
}

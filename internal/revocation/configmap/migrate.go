package configmap

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// Legacy lists, with reader, the revocation objects of p in the layout before the issuer was confined to
// its namespace: <policy>-revocations-* ConfigMaps beside the policy, owned by it, without an object prefix.
func Legacy(ctx context.Context, reader client.Reader, p *v1alpha1.TokenPolicy) (Objects, error) {
	var list corev1.ConfigMapList
	if err := reader.List(ctx, &list, client.InNamespace(p.Namespace), client.MatchingLabels{
		v1alpha1.LabelPolicy: p.Name, v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}); err != nil {
		return Objects{}, fmt.Errorf("list the revocation objects of %s in its namespace: %w", p.Name, err)
	}
	legacy := list.Items[:0:0]
	for i := range list.Items {
		cm := &list.Items[i]
		if _, prefixed := cm.Labels[v1alpha1.LabelObjectPrefix]; !prefixed && metav1.IsControlledBy(cm, p) {
			legacy = append(legacy, *cm)
		}
	}
	return Classify(p.Name, legacy), nil
}

// migrate moves every record of the policy's legacy objects into its bases and deletes the legacy objects,
// so that nothing an issuer of the previous layout acknowledged is lost:
//  1. the legacy journal is read afresh, then the legacy segments and bases are listed afresh: an entry
//     trimmed from the journal before the version read was sealed into a segment that already existed;
//  2. every record is merged (revocation.Newer) into the base of its shard, created when missing;
//  3. the legacy journal is deleted on condition that it is still the version read: a previous issuer that
//     decided meanwhile makes the deletion fail and the next pass start over, and once it is gone, previous
//     issuers can decide nothing more (they fail closed);
//  4. the legacy segments and bases go last.
//
// The caller creates the policy's journal only after this, so no issuer decides on the new objects before
// every record is in them. It returns the number of legacy objects deleted.
func (k *Keeper) migrate(ctx context.Context, h Policy, p *v1alpha1.TokenPolicy, cached Objects, now time.Time) (int, error) {
	var journal *corev1.ConfigMap
	if cached.Journal != nil {
		journal = &corev1.ConfigMap{}
		err := k.Reader.Get(ctx, client.ObjectKeyFromObject(cached.Journal), journal)
		switch {
		case apierrors.IsNotFound(err):
			journal = nil
		case err != nil:
			return 0, fmt.Errorf("read the previous journal %s: %w", cached.Journal.Name, err)
		}
	}
	legacy, err := Legacy(ctx, k.Reader, p)
	if err != nil {
		return 0, err
	}
	legacy.Journal = journal

	// Every record, by the shard it belongs to: a session's is in its id, a subject's is the hash of the
	// subject over the current count (readers look for those in every shard).
	entries := map[int]map[string]string{}
	for _, cm := range legacy.all() {
		for key, v := range cm.Data {
			i, ok := revocation.ShardOfEntry(key, v, int(max(p.Spec.Revocation.Shards, 1)))
			if !ok {
				continue // the fold number
			}
			if entries[i] == nil {
				entries[i] = map[string]string{}
			}
			entries[i][key] = revocation.Newer(key, entries[i][key], v)
		}
	}
	for _, i := range slices.Sorted(maps.Keys(entries)) {
		if err := k.mergeInto(ctx, h, i, entries[i], now); err != nil {
			return 0, err
		}
	}

	deleted := 0
	if journal != nil {
		err := k.Client.Delete(ctx, journal, client.Preconditions{UID: &journal.UID, ResourceVersion: &journal.ResourceVersion})
		if client.IgnoreNotFound(err) != nil {
			return 0, fmt.Errorf("retire the previous journal %s (it changed while its records were moved; moving again): %w", journal.Name, err)
		}
		deleted++
	}
	rest := append(slices.Collect(maps.Values(legacy.Segments)), slices.Collect(maps.Values(legacy.Bases))...)
	for _, cm := range rest {
		if err := k.Client.Delete(ctx, cm, client.Preconditions{UID: &cm.UID}); client.IgnoreNotFound(err) != nil {
			return deleted, fmt.Errorf("delete the previous revocation object %s: %w", cm.Name, err)
		}
		deleted++
	}
	return deleted, nil
}

// mergeInto merges entries into shard i's base, creating the base when it does not exist.
func (k *Keeper) mergeInto(ctx context.Context, h Policy, i int, entries map[string]string, now time.Time) error {
	key := h.object(h.BaseName(i))
	err := k.Reader.Get(ctx, key, &corev1.ConfigMap{})
	if apierrors.IsNotFound(err) {
		_, err = k.create(ctx, h, key.Name, 0)
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	_, _, err = UpdateShard(ctx, k.Client, k.Reader, key, nil, func(data map[string]string) (bool, error) {
		return mergeRecords(data, entries, now), nil
	})
	if err != nil {
		return fmt.Errorf("move the previous records into %s: %w", key.Name, err)
	}
	return nil
}

func (o Objects) all() []*corev1.ConfigMap {
	var all []*corev1.ConfigMap
	if o.Journal != nil {
		all = append(all, o.Journal)
	}
	all = append(all, slices.Collect(maps.Values(o.Segments))...)
	return append(all, slices.Collect(maps.Values(o.Bases))...)
}

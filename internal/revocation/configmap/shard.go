package configmap

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Mutation changes a shard's data in place and reports whether it changed anything. It is called once per
// compare-and-swap attempt, each time with the freshest data, so it must decide from what it is given.
type Mutation func(data map[string]string) (changed bool, err error)

// UpdateShard is the one code path that writes a shard. It applies mutate to the shard ConfigMap key and
// writes it with a resourceVersion precondition. start is the object to begin from (an informer's copy, or
// the last one written), or nil to read it first; start is never modified. On a conflict it re-reads the
// object through reader (uncached) and applies mutate again, until the write succeeds, mutate fails, or
// ctx ends. It returns the object as written (or as read, when nothing changed) and the number of Updates
// sent (conflicts are that number minus one on success). A decision to write nothing is only returned
// once it was made on a fresh read, so that every outcome reflects the shard as the API server holds it.
func UpdateShard(ctx context.Context, c client.Client, reader client.Reader, key types.NamespacedName, start *corev1.ConfigMap, mutate Mutation) (*corev1.ConfigMap, int, error) {
	cm := start
	writes := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, writes, fmt.Errorf("update shard %s: %w", key, err)
		}
		fresh := cm == nil
		if fresh {
			cm = &corev1.ConfigMap{}
			if err := reader.Get(ctx, key, cm); err != nil {
				return nil, writes, fmt.Errorf("read shard %s: %w", key, err)
			}
		} else {
			cm = cm.DeepCopy()
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		changed, err := mutate(cm.Data)
		if err != nil {
			return nil, writes, err
		}
		if !changed && !fresh {
			// A write is checked by its resourceVersion precondition; a decision to write nothing has no
			// such check, and start may be stale (an informer's copy). Decide again on a fresh read.
			cm = nil
			continue
		}
		if !changed {
			return cm, writes, nil
		}
		writes++
		err = c.Update(ctx, cm) // carries cm.ResourceVersion: the API server refuses a stale one
		if err == nil {
			return cm, writes, nil
		}
		if !apierrors.IsConflict(err) {
			return nil, writes, fmt.Errorf("update shard %s: %w", key, err)
		}
		cm = nil
	}
}

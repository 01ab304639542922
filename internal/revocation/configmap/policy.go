package configmap

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// Policy is the handle on one TokenPolicy's revocation objects: where they live, what they are called and
// labelled, and (with a Keeper) their whole lifecycle. The issuer's Store, the controller and the kubectl
// plugin all reach the objects through it.
type Policy struct {
	// Key is the namespace of the objects (the issuer's) and the prefix of their names
	// (TokenPolicy.ObjectPrefix): the key that names the policy in a Store, revocation.Place and the index.
	Key types.NamespacedName
	// Owner is the TokenPolicy, named in the objects' labels.
	Owner types.NamespacedName
}

// For is the handle on the revocation objects of p in the issuer's namespace.
func For(p *v1alpha1.TokenPolicy, namespace string) Policy {
	return Policy{Key: types.NamespacedName{Namespace: namespace, Name: p.ObjectPrefix()}, Owner: client.ObjectKeyFromObject(p)}
}

// JournalName is the name of the policy's journal.
func (h Policy) JournalName() string { return revocation.JournalName(h.Key.Name) }

// BaseName is the name of shard i's base.
func (h Policy) BaseName(i int) string { return revocation.ShardName(h.Key.Name, i) }

// SegmentName is the name of sealed segment seq.
func (h Policy) SegmentName(seq uint64) string { return revocation.SegmentName(h.Key.Name, seq) }

func (h Policy) object(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: h.Key.Namespace, Name: name}
}

// Labels are the labels of every revocation object of the policy.
func (h Policy) Labels() map[string]string {
	return map[string]string{
		v1alpha1.LabelManagedBy:       v1alpha1.ManagedByValue,
		v1alpha1.LabelComponent:       v1alpha1.ComponentRevocations,
		v1alpha1.LabelPolicy:          h.Owner.Name,
		v1alpha1.LabelPolicyNamespace: h.Owner.Namespace,
		v1alpha1.LabelObjectPrefix:    h.Key.Name,
	}
}

// selector selects the policy's revocation objects, and with role only its sealed segments.
func (h Policy) selector(segments bool) client.MatchingLabels {
	sel := client.MatchingLabels{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations, v1alpha1.LabelObjectPrefix: h.Key.Name}
	if segments {
		sel[v1alpha1.LabelRevocationRole] = v1alpha1.RevocationRoleSegment
	}
	return sel
}

// List reads the policy's revocation objects with reader.
func (h Policy) List(ctx context.Context, reader client.Reader) (Objects, error) {
	var list corev1.ConfigMapList
	if err := reader.List(ctx, &list, client.InNamespace(h.Key.Namespace), h.selector(false)); err != nil {
		return Objects{}, fmt.Errorf("list the revocation objects of %s: %w", h.Owner, err)
	}
	return Classify(h.Key.Name, list.Items), nil
}

// keyOf is the policy key of a revocation object: its namespace and its object prefix label; ok is false
// for an object that is not one.
func keyOf(cm *corev1.ConfigMap) (types.NamespacedName, bool) {
	prefix := cm.Labels[v1alpha1.LabelObjectPrefix]
	return types.NamespacedName{Namespace: cm.Namespace, Name: prefix},
		prefix != "" && cm.Labels[v1alpha1.LabelComponent] == v1alpha1.ComponentRevocations
}

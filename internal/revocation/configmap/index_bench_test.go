package configmap

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// indexWith returns an index holding one shard of n records, and the ids it holds.
func indexWith(n int) (*index, types.NamespacedName, []string, *corev1.ConfigMap) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p-revocations-0", ResourceVersion: "1",
		Labels: map[string]string{v1alpha1.LabelObjectPrefix: "p", v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}}, Data: map[string]string{}}
	ids := make([]string, n)
	for i := range n {
		ids[i] = revocation.NewSessionID(0)
		cm.Data[revocation.SessionKey(ids[i])] = revocation.EncodeSession(revocation.Session{Subject: "alice", Generation: uint64(i), Rotated: now, Expiry: now.Add(time.Hour), State: revocation.Active})
	}
	x := newIndex()
	x.OnAdd(cm, true)
	x.OnAdd(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: revocation.JournalName("p"), ResourceVersion: "1",
		Labels: cm.Labels}}, true)
	return x, types.NamespacedName{Namespace: "ns", Name: "p"}, ids, cm
}

// BenchmarkIndexLookup is the shard lookup introspection and Current do: a merged record by session id.
func BenchmarkIndexLookup(b *testing.B) {
	x, policy, ids, _ := indexWith(10000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if s, err := x.session(policy, ids[i%len(ids)]); s == nil || err != nil {
			b.Fatalf("got %v, %v; want the record", s, err)
		}
		i++
	}
}

// BenchmarkIndexJournalUpdate is what a replica spends on one watched journal write of 16 changed records
// next to a 10k-record base.
func BenchmarkIndexJournalUpdate(b *testing.B) {
	x, _, ids, _ := indexWith(10000)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	journal := func(rv int, gen uint64) *corev1.ConfigMap {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p-revocations-0-journal", ResourceVersion: fmt.Sprint(rv),
			Labels: map[string]string{v1alpha1.LabelObjectPrefix: "p", v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}}, Data: map[string]string{}}
		for i := range 16 {
			cm.Data[revocation.SessionKey(ids[i])] = revocation.EncodeSession(revocation.Session{Subject: "alice", Generation: gen, Rotated: now, Expiry: now.Add(time.Hour), State: revocation.Active})
		}
		return cm
	}
	rv := 2
	prev := journal(rv, 0)
	x.OnAdd(prev, false)
	b.ReportAllocs()
	for b.Loop() {
		rv++
		next := journal(rv, uint64(rv))
		x.OnUpdate(prev, next)
		prev = next
	}
}

package configmap

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// A record revoking a session, or every session of a subject, must live as long as the sessions it revokes
// can: until they would end under the refresh lifetime they were issued with, whatever the policy says
// later. Sessions the issuer has seen carry their end (their tokens' exp); for those an operator revokes by
// id or by subject, the end is bounded by the longest refresh lifetime the policy has issued sessions with
// and whose sessions may still live. The Keeper keeps that bound on the journal, in the
// tokenwarden.io/longest-refresh-lifetime annotation: the lifetime, and once the policy's lifetime is
// lowered, until when the longer one matters (the lowering, plus the longer lifetime).

type longest struct {
	Lifetime metav1.Duration `json:"lifetime"`
	Until    *metav1.Time    `json:"until,omitempty"`
}

// LongestLifetime is the longest refresh lifetime of the policy's sessions that may still live at now:
// current, or a longer one it had before, as recorded on journal (nil: none recorded).
func LongestLifetime(journal *corev1.ConfigMap, current time.Duration, now time.Time) time.Duration {
	l, ok := readLongest(journal)
	if !ok || l.Lifetime.Duration <= current || (l.Until != nil && !now.Before(l.Until.Time)) {
		return current
	}
	return l.Lifetime.Duration
}

func readLongest(journal *corev1.ConfigMap) (longest, bool) {
	var l longest
	if journal == nil {
		return l, false
	}
	v, ok := journal.Annotations[v1alpha1.AnnotationLongestRefreshLifetime]
	return l, ok && json.Unmarshal([]byte(v), &l) == nil
}

// recordLifetime keeps the journal's longest refresh lifetime current for a policy whose lifetime is now
// current: a longer lifetime is kept until every session issued with it has ended.
func (k *Keeper) recordLifetime(ctx context.Context, journal *corev1.ConfigMap, current time.Duration, now time.Time) error {
	have, ok := readLongest(journal)
	want := longest{Lifetime: metav1.Duration{Duration: current}}
	switch {
	case ok && have.Lifetime.Duration > current && have.Until == nil:
		// Lowered: sessions issued until now with the longer lifetime end by now plus it.
		until := metav1.NewTime(now.Add(have.Lifetime.Duration + RetirementLeeway).UTC().Truncate(time.Second))
		want = longest{Lifetime: have.Lifetime, Until: &until}
	case ok && have.Lifetime.Duration > current && now.Before(have.Until.Time):
		want = have
	}
	b, err := json.Marshal(want)
	if err != nil {
		return err
	}
	if journal.Annotations[v1alpha1.AnnotationLongestRefreshLifetime] == string(b) {
		return nil
	}
	// A merge patch of the annotation alone: the issuers' compare-and-swap of the journal's data retries
	// once, and nothing they wrote is touched.
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, v1alpha1.AnnotationLongestRefreshLifetime, string(b))
	if err := k.Client.Patch(ctx, journal, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		return fmt.Errorf("record the longest refresh lifetime on %s: %w", journal.Name, err)
	}
	return nil
}

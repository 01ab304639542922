package reliability

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// TestASessionRevokedBeforeAnUpgradeIsRefusedAfterIt: an installation of the layout before the issuer was
// confined to its namespace kept revocation records beside the policy, owned by it. The test puts the
// policy back in that state (its objects in the issuer's namespace gone, the previous layout's objects in
// their place, as that version's issuers wrote them): a session revoked by logout (in a base), one revoked
// by an operator and a subject-wide revocation (in the journal). Then the controller of this version runs:
// while the records move, the issuers answer 503 (no journal yet), never a token; afterwards every replica
// refuses those sessions, the others go on, and the previous objects are gone.
func TestASessionRevokedBeforeAnUpgradeIsRefusedAfterIt(t *testing.T) {
	f := newFixture(t, fixtureOptions{replicas: 2, manual: true})
	ctx := context.Background()
	loggedOut, revoked, kept := f.login(0, "alice"), f.login(1, "alice"), f.login(0, "bob")
	sa := "system:serviceaccount:" + f.ns + ":app"
	exchanged, err := postForm(f.url(1, "token"), map[string][]string{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "subject_token": {f.saToken("app")}}, nil)
	if err != nil || exchanged.status != http.StatusOK {
		t.Fatalf("token exchange: %v %v", exchanged, err)
	}

	now := time.Now()
	gone := func(reason string) string {
		return revocation.EncodeSession(revocation.Session{Subject: "alice", Rotated: now, Expiry: now.Add(time.Hour),
			State: revocation.Revoked, Reason: reason, RevokedAt: &now})
	}
	bases := map[int]map[string]string{0: {}, 1: {}}
	bases[revocation.SessionShard(sidOf(t, loggedOut))][revocation.SessionKey(sidOf(t, loggedOut))] = gone(revocation.ReasonLogout)
	journal := map[string]string{
		revocation.SessionKey(sidOf(t, revoked)): gone("offboarded"),
		revocation.SubjectKey(sa):                revocation.EncodeSubject(revocation.Subject{Subject: sa, RevokedBefore: now.Add(time.Second), Expiry: now.Add(time.Hour)}),
	}

	p := f.getPolicy()
	h := configmap.For(p, issuerNS)
	objs, err := h.List(ctx, env.Client)
	must(t, err)
	for _, cm := range []*corev1.ConfigMap{objs.Journal, objs.Bases[0], objs.Bases[1]} {
		must(t, env.Client.Delete(ctx, cm))
	}
	owner := *metav1.NewControllerRef(p, v1alpha1.GroupVersion.WithKind("TokenPolicy"))
	legacy := func(name string, data map[string]string) {
		must(t, env.Client.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name,
			Labels: map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelPolicy: f.policy,
				v1alpha1.LabelComponent: v1alpha1.ComponentRevocations},
			OwnerReferences: []metav1.OwnerReference{owner}}, Data: data}))
	}
	legacy(f.policy+"-revocations-0", bases[0])
	legacy(f.policy+"-revocations-1", bases[1])
	legacy(f.policy+"-revocations-journal", journal)
	if r := f.refresh(0, loggedOut.str("refresh_token")); r.status != http.StatusServiceUnavailable {
		t.Fatalf("refresh before the controller moved the records: %d %s; want 503 (nothing to decide on yet)", r.status, r.body)
	}

	f.reconcile() // the upgraded controller's first pass

	for _, r := range []response{loggedOut, revoked, exchanged} {
		for i := range f.count() {
			if got := f.refresh(i, r.str("refresh_token")); got.status != http.StatusBadRequest || got.str("error") != "invalid_grant" {
				t.Fatalf("replica %d: refresh of a session revoked before the upgrade: %d %s; want invalid_grant", i, got.status, got.body)
			}
		}
		f.eventuallyInactive(r.str("access_token"))
	}
	if r := f.refresh(1, kept.str("refresh_token")); r.status != http.StatusOK {
		t.Fatalf("bob's session after the upgrade: %d %s; want it to refresh", r.status, r.body)
	}
	for _, name := range []string{"-revocations-0", "-revocations-1", "-revocations-journal"} {
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: f.policy + name}, &corev1.ConfigMap{})
		if !apierrors.IsNotFound(err) {
			t.Fatalf("%s%s of the previous layout after the move: %v; want it removed", f.policy, name, err)
		}
	}
}

// sidOf reads the session id of a token response's refresh token, without verifying anything.
func sidOf(t *testing.T, r response) string {
	t.Helper()
	parts := strings.Split(r.str("refresh_token"), ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", r.str("refresh_token"))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	must(t, err)
	var claims struct{ Sid string }
	must(t, json.Unmarshal(b, &claims))
	return claims.Sid
}

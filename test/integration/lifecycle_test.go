package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/login"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// exchange logs ServiceAccount name in on replica i with a token of the real TokenRequest API, bound to
// pod when it is not nil.
func (f *fixture) exchange(i int, name string, pod *corev1.Pod) response {
	f.t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{externalURL + f.path()}}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := clientset.CoreV1().ServiceAccounts(f.ns).CreateToken(context.Background(), name, req, metav1.CreateOptions{})
	must(f.t, err)
	r := f.token(i, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "subject_token": {tr.Status.Token}})
	if r.status != http.StatusOK {
		f.t.Fatalf("exchange of %s's token: %d %s", name, r.status, r.body)
	}
	return r
}

// ended waits until every replica says the access token of r is inactive (introspection changes nothing),
// then checks that every replica refuses r's refresh token saying why (one of reasons), and returns how long
// the change took to reach every replica from start.
func (f *fixture) ended(r response, start time.Time, reasons ...string) time.Duration {
	f.t.Helper()
	f.eventuallyInactive(r.str("access_token"))
	took := time.Since(start)
	for i := range f.replicas {
		got := f.refresh(i, r.str("refresh_token"))
		desc := got.str("error_description")
		if got.status != http.StatusBadRequest || got.str("error") != "invalid_grant" || !slices.ContainsFunc(reasons, func(r string) bool { return strings.Contains(desc, r) }) {
			f.t.Fatalf("replica %d: refresh of a session whose credential has ended: %d %s; want invalid_grant saying one of %q", i, got.status, got.body, reasons)
		}
	}
	return took
}

// record is the revocation record of the session of rt, as the policy's revocation objects hold it.
func (f *fixture) record(rt string) revocation.Session {
	f.t.Helper()
	p := &v1alpha1.TokenPolicy{}
	must(f.t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: f.policy}, p))
	sid := claimsOf(f.t, rt)["sid"].(string)
	objs, err := configmap.For(p, issuerNS).List(context.Background(), env.Client)
	must(f.t, err)
	shard := revocation.SessionShard(sid)
	v := objs.Bases[shard].Data[revocation.SessionKey(sid)]
	for k, p := range objs.Pending()[shard] {
		if k == revocation.SessionKey(sid) {
			v = revocation.Newer(k, v, p)
		}
	}
	rec, err := revocation.DecodeSession(v)
	if err != nil {
		f.t.Fatalf("the record of session %s: %v", sid, err)
	}
	return rec
}

// TestASessionEndsWithItsServiceAccountOrPod opens sessions by exchanging real ServiceAccount tokens, one
// bound to a Pod, then deletes the Pod, deletes and creates again the ServiceAccount, and takes another
// ServiceAccount out of the policy: each ends exactly the matching sessions, on every replica, with the
// reason in the answer and in the session's record, and leaves the others alone.
func TestASessionEndsWithItsServiceAccountOrPod(t *testing.T) {
	f := newFixture(t, 2, func(s *v1alpha1.TokenPolicySpec) {
		s.Login.ServiceAccounts = append(s.Login.ServiceAccounts, v1alpha1.ServiceAccountRef{Namespace: s.Login.ServiceAccounts[0].Namespace, Name: "batch"})
	})
	ctx := context.Background()
	spec := &v1alpha1.TokenPolicy{}
	must(t, env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "batch"}}))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "app-0"},
		Spec: corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	must(t, env.Client.Create(ctx, pod))

	// The controller lists the new ServiceAccount and the Pod for the issuer within its watch's latency:
	// until then a new session's refresh is refused (its Pod is unknown), and a new session is opened.
	sessions := make([]response, 3)
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		for i, open := range []func() response{
			func() response { return f.exchange(0, "app", nil) },
			func() response { return f.exchange(1, "app", pod) },
			func() response { return f.exchange(0, "batch", nil) },
		} {
			got := f.refresh(1, open().str("refresh_token"))
			if got.status != http.StatusOK {
				return false, fmt.Sprintf("refresh of a new session: %d %s", got.status, got.body)
			}
			sessions[i] = got
		}
		return true, ""
	})
	unbound, bound, batch := sessions[0], sessions[1], sessions[2]

	start := time.Now()
	must(t, env.Client.Delete(ctx, pod))
	t.Logf("the Pod's deletion ended its session on every replica within %s", f.ended(bound, start, "the Pod the ServiceAccount token was bound to is gone"))
	if rec := f.record(bound.str("refresh_token")); rec.State != revocation.Revoked || rec.Reason != "pod-deleted" {
		t.Errorf("the session's record: %+v; want revoked, reason pod-deleted", rec)
	}
	unbound = f.refresh(1, unbound.str("refresh_token"))
	if unbound.status != http.StatusOK {
		t.Fatalf("the unbound session of the same ServiceAccount after the Pod went: %d %s; want it to go on", unbound.status, unbound.body)
	}

	// Deleted and created again under the same name: a new UID, and the old sessions end.
	sa := &corev1.ServiceAccount{}
	must(t, env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "app"}, sa))
	start = time.Now()
	must(t, env.Client.Delete(ctx, sa))
	must(t, env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "app"}}))
	t.Logf("deleting and creating the ServiceAccount again ended its session on every replica within %s",
		f.ended(unbound, start, "the ServiceAccount was deleted and created again", "the ServiceAccount was deleted"))
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		renewed := f.exchange(0, "app", nil)
		r := f.refresh(1, renewed.str("refresh_token"))
		return r.status == http.StatusOK, fmt.Sprintf("a session of the new ServiceAccount: %d %s", r.status, r.body)
	})
	if r := f.refresh(1, batch.str("refresh_token")); r.status != http.StatusOK {
		t.Fatalf("another ServiceAccount's session: %d %s; want it to go on", r.status, r.body)
	} else {
		batch = r
	}

	// Taken out of the policy.
	must(t, env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: f.policy}, spec))
	spec.Spec.Login.ServiceAccounts = spec.Spec.Login.ServiceAccounts[:1]
	must(t, env.Client.Update(ctx, spec))
	start = time.Now()
	t.Logf("taking the ServiceAccount out of spec.login ended its session on every replica within %s",
		f.ended(batch, start, "the policy no longer allows this ServiceAccount"))
}

// TestASessionEndsWithItsUser removes a user and changes another's password in the users Secret.
func TestASessionEndsWithItsUser(t *testing.T) {
	f := newFixture(t, 2, nil)
	ctx := context.Background()
	alice, bob := f.login(0, "alice"), f.login(1, "bob")
	carol := f.login(0, "alice") // a second session of alice's, ended with the first
	users := &corev1.Secret{}
	must(t, env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "users"}, users))
	other, err := bcryptAgain() // the same password, hashed again: a new salt, a new hash
	must(t, err)
	users.Data["alice"] = other
	start := time.Now()
	must(t, env.Client.Update(ctx, users))
	t.Logf("a changed password ended the user's sessions on every replica within %s", f.ended(alice, start, "the user's password changed"))
	f.ended(carol, start, "the user's password changed")
	if rec := f.record(alice.str("refresh_token")); rec.State != revocation.Revoked || rec.Reason != "password-changed" {
		t.Errorf("the session's record: %+v; want revoked, reason password-changed", rec)
	}
	bob = f.refresh(1, bob.str("refresh_token"))
	if bob.status != http.StatusOK {
		t.Fatalf("bob's session after alice's password changed: %d %s", bob.status, bob.body)
	}
	// alice logs in with her (new) hash and goes on.
	if r := f.refresh(0, f.login(1, "alice").str("refresh_token")); r.status != http.StatusOK {
		t.Fatalf("alice's new session: %d %s", r.status, r.body)
	}

	must(t, env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "users"}, users))
	delete(users.Data, "bob")
	start = time.Now()
	must(t, env.Client.Update(ctx, users))
	t.Logf("removing a user ended their session on every replica within %s", f.ended(bob, start, "the user was removed"))
}

// bcryptAgain hashes the fixture's password again: a new salt, so a new hash of the same password.
func bcryptAgain() ([]byte, error) {
	return bcrypt.GenerateFromPassword([]byte("wonderland"), login.MinCost)
}

// claimsOf reads a JWT's claims without verifying anything.
func claimsOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	must(t, err)
	var claims map[string]any
	must(t, json.Unmarshal(b, &claims))
	return claims
}

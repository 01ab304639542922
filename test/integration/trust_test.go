package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// policyCondition waits until policy ns/name's condition t satisfies ok, and returns it.
func policyCondition(t *testing.T, ns, name, typ string, ok func(metav1.Condition) bool) metav1.Condition {
	t.Helper()
	var c metav1.Condition
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		p := &v1alpha1.TokenPolicy{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
			return false, err.Error()
		}
		found := meta.FindStatusCondition(p.Status.Conditions, typ)
		if found == nil {
			return false, typ + " absent"
		}
		c = *found
		return ok(c), fmt.Sprintf("%s is %s %s: %s", typ, c.Status, c.Reason, c.Message)
	})
	return c
}

// TestAPolicyWithABrokenUsersSecretIsNeverReadyAndIsServedOnceFixed follows a platform team that gets the
// users Secret wrong, reads why from the policy's status alone, and fixes it: the issuer serves password
// login within seconds, with no restart and no label on the Secret.
func TestAPolicyWithABrokenUsersSecretIsNeverReadyAndIsServedOnceFixed(t *testing.T) {
	f := newFixture(t, 1, nil)
	ctx := context.Background()
	p := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "staff"}, Spec: v1alpha1.TokenPolicySpec{
		Audiences: []string{"staff-api"}, Login: v1alpha1.LoginSpec{PasswordSecretName: "staff-users"}}}
	must(t, env.Client.Create(ctx, p))
	notReady := func(reason, says string) {
		t.Helper()
		c := policyCondition(t, f.ns, "staff", v1alpha1.ConditionLoginReady, func(c metav1.Condition) bool { return c.Reason == reason })
		if c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, says) {
			t.Fatalf("LoginReady %s %s: %q; want False saying %q", c.Status, c.Reason, c.Message, says)
		}
		if r := policyCondition(t, f.ns, "staff", v1alpha1.ConditionReady, func(metav1.Condition) bool { return true }); r.Status != metav1.ConditionFalse {
			t.Fatalf("Ready %s: %s; want False", r.Status, r.Message)
		}
		r := post(t, f.replicas[0].base+"/"+f.ns+"/staff/token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}}, nil)
		if r.status == http.StatusOK {
			t.Fatalf("password login while the users Secret is unusable: %d %s; want it refused", r.status, r.body)
		}
	}
	notReady(v1alpha1.ReasonSecretNotFound, "users Secret staff-users does not exist")

	hash, err := passwordHash()
	must(t, err)
	users := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "staff-users"},
		Data: map[string][]byte{"alice": hash, "mallory": []byte("$2a$31$" + strings.Repeat("x", 53))}}
	must(t, env.Client.Create(ctx, users))
	notReady(v1alpha1.ReasonSecretNotPermitted, v1alpha1.AnnotationAllowedPolicies+": staff")

	users.Annotations = map[string]string{v1alpha1.AnnotationAllowedPolicies: "staff"}
	must(t, env.Client.Update(ctx, users))
	notReady(v1alpha1.ReasonSecretMalformed, `entry "mallory" has bcrypt cost 31`)

	delete(users.Data, "mallory")
	must(t, env.Client.Update(ctx, users))
	policyCondition(t, f.ns, "staff", v1alpha1.ConditionReady, func(c metav1.Condition) bool { return c.Status == metav1.ConditionTrue })
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		r := post(t, f.replicas[0].base+"/"+f.ns+"/staff/token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}}, nil)
		return r.status == http.StatusOK, fmt.Sprintf("login once Ready: %d %s", r.status, r.body)
	})
}

// TestAPolicyNamingAnotherPolicysKeysMintsNothing: the second policy is not Ready, and the issuer serves it
// nothing, while the first policy goes on being served.
func TestAPolicyNamingAnotherPolicysKeysMintsNothing(t *testing.T) {
	f := newFixture(t, 1, nil)
	rogue := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "rogue"}, Spec: v1alpha1.TokenPolicySpec{
		Audiences: []string{"payments-api"},
		Signing:   v1alpha1.SigningSpec{SecretName: "payments-signing-keys"},
		Login:     v1alpha1.LoginSpec{PasswordSecretName: "users", ServiceAccounts: []v1alpha1.ServiceAccountRef{{Namespace: f.ns, Name: "app"}}}}}
	must(t, env.Client.Create(context.Background(), rogue))
	c := policyCondition(t, f.ns, "rogue", v1alpha1.ConditionKeysReady, func(c metav1.Condition) bool { return c.Reason == v1alpha1.ReasonSecretNotPermitted })
	if c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "payments-signing-keys") {
		t.Fatalf("rogue KeysReady: %s %q; want False naming the Secret", c.Status, c.Message)
	}
	for _, form := range []url.Values{
		{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}},
		{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
			"subject_token": {f.saToken("app", externalURL+"/"+f.ns+"/rogue")}},
	} {
		r := post(t, f.replicas[0].base+"/"+f.ns+"/rogue/token", form, nil)
		if r.status != http.StatusNotFound || r.str("access_token") != "" {
			t.Fatalf("%s under rogue: %d %s; want 404, no token", form.Get("grant_type"), r.status, r.body)
		}
	}
	if r := f.login(0, "alice"); r.str("access_token") == "" {
		t.Fatalf("payments after rogue: %s", r.body)
	}
}

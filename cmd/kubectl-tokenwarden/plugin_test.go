package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/controllers"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

var (
	env        *testenv.Env
	kubeconfig string
)

func TestMain(m *testing.M) {
	testenv.Main(m, &env, func(e *testenv.Env) error {
		user, err := e.Environment().AddUser(envtest.User{Name: "plugin-user", Groups: []string{"system:masters"}}, nil)
		if err != nil {
			return err
		}
		b, err := user.KubeConfig()
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "plugin")
		if err != nil {
			return err
		}
		kubeconfig = filepath.Join(dir, "kubeconfig")
		return os.WriteFile(kubeconfig, b, 0o600)
	})
}

// kubectl runs the plugin as kubectl would, with kubectl's flags.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String() + errOut.String(), err
}

// runController runs both reconcilers against the test API server for the length of the test, with a
// namespace of the test's own as the issuer's, and returns it.
func runController(t *testing.T) string {
	t.Helper()
	issuerNS := env.Namespace(t)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Cache: controllers.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}}) // one manager per test
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(mgr, controllers.Options{IssuerURL: "https://issuer.test", IssuerNamespace: issuerNS}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = mgr.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return issuerNS
}

func readyPolicy(t *testing.T, ns, name string) *v1alpha1.TokenPolicy {
	t.Helper()
	p := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.TokenPolicySpec{Audiences: []string{"api"}, Revocation: v1alpha1.RevocationSpec{Shards: 2}}}
	if err := env.Client.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, p); err != nil {
			return false, err.Error()
		}
		return len(p.Status.Shards) == 2 && p.Status.ActiveKeyID != "", "policy not reconciled yet"
	})
	return p
}

func TestStatusSessionsRevokeAndInspectTellOneStory(t *testing.T) {
	issuerNS := runController(t)
	ns := env.Namespace(t)
	p := readyPolicy(t, ns, "payments")
	h := configmap.For(p, issuerNS)
	ctx := context.Background()

	// A session of alice's, refreshed once, as the issuer would leave it.
	secret := &keysSecret{}
	codec := secret.codec(t, ns, p)
	sid := revocation.NewSessionID(1)
	store := configmap.New(env.Client, env.Client, configmap.Options{})
	login := time.Now().Add(-time.Minute).Truncate(time.Second)
	sess := token.Session{ID: sid, Subject: "alice", AuthTime: login, Expiry: login.Add(time.Hour)}
	if _, err := store.Refresh(ctx, revocation.RefreshRequest{Place: revocation.Place{Policy: h.Key, Shard: 1},
		SessionID: sid, Subject: "alice", AuthTime: login, Expiry: sess.Expiry, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	oldRefresh, _, err := codec.MintRefresh(sess, 0, login)
	if err != nil {
		t.Fatal(err)
	}

	out, err := kubectl(t, "-n", ns, "status", "payments")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"Policy:", ns + "/payments", p.Status.ActiveKeyID, "Active", issuerNS + "/" + h.BaseName(0), issuerNS + "/" + h.BaseName(1), "Revoked sessions: 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}

	out, err = kubectl(t, "-n", ns, "sessions", "payments", "--subject", "alice")
	if err != nil || !strings.Contains(out, sid) || !strings.Contains(out, "active") {
		t.Fatalf("sessions: %v; want alice's session active:\n%s", err, out)
	}

	out, err = kubectl(t, "inspect", oldRefresh)
	if err != nil || !strings.Contains(out, "Verdict: rotated") || !strings.Contains(out, "generation 0 was replaced by generation 1") {
		t.Fatalf("inspect of a rotated refresh token: %v; want rotated:\n%s", err, out)
	}

	out, err = kubectl(t, "-n", ns, "revoke", "payments", "--session", sid, "--reason", "laptop stolen")
	if err != nil || !strings.Contains(out, "Revoked session "+sid) {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	out, err = kubectl(t, "inspect", oldRefresh)
	if err != nil || !strings.Contains(out, "Verdict: revoked") || !strings.Contains(out, "laptop stolen") {
		t.Fatalf("inspect after revoke: %v; want revoked, laptop stolen:\n%s", err, out)
	}
	out, err = kubectl(t, "-n", ns, "status", "payments")
	if err != nil || !strings.Contains(out, "Revoked sessions: 1") {
		t.Fatalf("status after revoke: %v; want 1 revoked session:\n%s", err, out)
	}

	// A subject-wide revocation of bob: one record, and bob's tokens say so.
	out, err = kubectl(t, "-n", ns, "revoke", "payments", "--subject", "bob")
	if err != nil || !strings.Contains(out, "Revoked subject bob") {
		t.Fatalf("revoke --subject: %v\n%s", err, out)
	}
	bobAccess, _, err := codec.MintAccess(token.Session{ID: revocation.NewSessionID(0), Subject: "bob", AuthTime: login, Expiry: login.Add(time.Hour)}, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out, err = kubectl(t, "inspect", bobAccess)
	if err != nil || !strings.Contains(out, "Verdict: revoked") || !strings.Contains(out, "every session of bob") {
		t.Fatalf("inspect of bob's token: %v; want revoked subject-wide:\n%s", err, out)
	}
}

// TestTheReadCommandsSayWhichRoleIsMissing runs status as someone without the viewer roles, then with the
// ClusterRole only: each Forbidden names the role that grants what was refused.
func TestTheReadCommandsSayWhichRoleIsMissing(t *testing.T) {
	issuerNS := runController(t)
	ns := env.Namespace(t)
	readyPolicy(t, ns, "payments")
	ctx := context.Background()
	user := "someone-" + ns
	out, err := kubectl(t, "--as", user, "-n", ns, "status", "payments")
	if err == nil || !strings.Contains(out+err.Error(), "forbidden") || !strings.Contains(err.Error(), "the ClusterRole tokenwarden-revocation-viewer") {
		t.Fatalf("status without any role: %v\n%s; want Forbidden naming the ClusterRole", err, out)
	}
	// The chart's ClusterRole, bound; the Role of the issuer's namespace still missing.
	viewer := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "viewer-" + ns}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"tokenpolicies", "tokenrevocations"}, Verbs: []string{"get", "list", "watch"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "viewer-" + ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: viewer.Name},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: rbacv1.GroupName, Name: user}}}
	for _, o := range []client.Object{viewer, binding} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), o) })
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		out, err = kubectl(t, "--as", user, "-n", ns, "status", "payments")
		return err != nil && strings.Contains(err.Error(), "the Role tokenwarden-revocation-viewer in namespace "+issuerNS),
			fmt.Sprintf("status with the ClusterRole only: %v\n%s; want Forbidden naming the Role of %s", err, out, issuerNS)
	})
}

func TestPluginRefusesBadInput(t *testing.T) {
	ns := env.Namespace(t)
	tests := map[string]struct {
		args []string
		want string
	}{
		"revoke with neither flag":   {[]string{"-n", ns, "revoke", "p"}, "exactly one of --session and --subject"},
		"revoke with both flags":     {[]string{"-n", ns, "revoke", "p", "--session", "x", "--subject", "y"}, "exactly one of --session and --subject"},
		"inspect of a non-token":     {[]string{"inspect", "hello"}, "not a JWT"},
		"status of a missing policy": {[]string{"-n", ns, "status", "nope"}, "not found"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := kubectl(t, tc.args...)
			if err == nil || !strings.Contains(err.Error()+out, tc.want) {
				t.Fatalf("got %v\n%s; want an error containing %q", err, out, tc.want)
			}
		})
	}
}

// keysSecret builds a codec for a policy from the key Secret the controller generated.
type keysSecret struct{}

type corev1Secret = corev1.Secret

func (keysSecret) codec(t *testing.T, ns string, p *v1alpha1.TokenPolicy) *token.Codec {
	t.Helper()
	s := &corev1Secret{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: p.Name + "-signing-keys"}, s); err != nil {
		t.Fatal(err)
	}
	set, err := keys.FromSecret(p.Spec.Signing.Algorithm, s)
	if err != nil {
		t.Fatal(err)
	}
	c, err := token.New(token.Policy{Issuer: p.Status.IssuerURL, Audiences: p.Spec.Audiences, AccessLifetime: 15 * time.Minute, Keys: set}, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

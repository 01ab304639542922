package chart

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// grants flattens rules into sorted "verb group/resource" lines (with resource names and non-resource
// URLs when a rule has them), so that rules compare the same however they are grouped or ordered.
func grants(t *testing.T, o *unstructured.Unstructured) []string {
	t.Helper()
	var rules []rbacv1.PolicyRule
	raw, _, _ := unstructured.NestedSlice(o.Object, "rules")
	for _, r := range raw {
		var rule rbacv1.PolicyRule
		if m, ok := r.(map[string]any); !ok || runtimeConverter.FromUnstructuredWithValidation(m, &rule, true) != nil {
			t.Fatalf("%s: rule %v is not a PolicyRule", identity(o), r)
		}
		rules = append(rules, rule)
	}
	var out []string
	for _, r := range rules {
		for _, verb := range r.Verbs {
			for _, url := range r.NonResourceURLs {
				out = append(out, verb+" "+url)
			}
			for _, group := range r.APIGroups {
				for _, resource := range r.Resources {
					line := verb + " " + strings.TrimPrefix(group+"/"+resource, "/")
					if len(r.ResourceNames) > 0 {
						line += " named " + strings.Join(r.ResourceNames, ",")
					}
					out = append(out, line)
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// issuerGrants is everything the issuer needs, and no more: it reads policies, Secrets (signing keys,
// users) and ConfigMaps (revocation objects) through informers, updates journals, creates sealed segments,
// reviews ServiceAccount tokens and records events.
var issuerGrants = []string{
	"create authentication.k8s.io/tokenreviews",
	"create configmaps",
	"create events.k8s.io/events",
	"get configmaps", "get secrets", "get tokenwarden.io/tokenpolicies",
	"list configmaps", "list secrets", "list tokenwarden.io/tokenpolicies",
	"patch events.k8s.io/events",
	"update configmaps",
	"watch configmaps", "watch secrets", "watch tokenwarden.io/tokenpolicies",
}

func TestTheChartGrantsTheControllerExactlyTheGeneratedRules(t *testing.T) {
	chart := renderChart(t, defaultRelease, defaultNamespace, "")
	generated := find(t, readObjects(t, "config", "rbac", "role.yaml"), "ClusterRole", "tokenwarden-controller")
	got, want := grants(t, find(t, chart, "ClusterRole", "tokenwarden-controller")), grants(t, generated)
	if !slices.Equal(got, want) {
		t.Errorf("chart's controller ClusterRole:\ngot  %q;\nwant %q (config/rbac/role.yaml: copy it to charts/tokenwarden/files/controller-clusterrole.yaml)", got, want)
	}
	leases := find(t, readObjects(t, "config", "rbac", "leader_election_role.yaml"), "Role", "tokenwarden-leader-election")
	role := find(t, chart, "Role", "tokenwarden-leader-election")
	if got, want := grants(t, role), grants(t, leases); !slices.Equal(got, want) {
		t.Errorf("chart's leader-election Role:\ngot  %q;\nwant %q (config/rbac/leader_election_role.yaml)", got, want)
	}
	if role.GetNamespace() != defaultNamespace {
		t.Errorf("leader-election Role: got namespace %q; want the release namespace %q", role.GetNamespace(), defaultNamespace)
	}
}

func TestTheChartAndKustomizeGrantTheIssuerTheSameLeastRules(t *testing.T) {
	chart := grants(t, find(t, renderChart(t, defaultRelease, defaultNamespace, ""), "ClusterRole", "tokenwarden-issuer"))
	kustomize := grants(t, find(t, renderKustomize(t), "ClusterRole", "tokenwarden-issuer"))
	if !slices.Equal(chart, issuerGrants) {
		t.Errorf("chart's issuer ClusterRole:\ngot  %q;\nwant %q", chart, issuerGrants)
	}
	if !slices.Equal(kustomize, issuerGrants) {
		t.Errorf("config/issuer's issuer ClusterRole:\ngot  %q;\nwant %q", kustomize, issuerGrants)
	}
}

// impersonate returns a client that acts as the ServiceAccount namespace/name.
func impersonate(t *testing.T, namespace, name string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: fmt.Sprintf("system:serviceaccount:%s:%s", namespace, name)}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// access is one request a ServiceAccount makes, and whether RBAC must allow it.
type access struct {
	what    string
	allowed bool
	do      func(context.Context) error
}

func TestTheChartsServiceAccountsCanDoOnlyWhatTheirComponentNeeds(t *testing.T) {
	ctx := context.Background()
	release := restrictedNamespace(t) // the release namespace
	apps := env.Namespace(t)          // a namespace with a policy, its keys, users and shards
	const prefix = "least-privilege-tokenwarden"
	for _, o := range renderChart(t, "least-privilege", release, "") {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
		default:
			continue
		}
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", identity(o), err)
		}
		if o.GetNamespace() == "" {
			t.Cleanup(func() { _ = env.Client.Delete(context.Background(), o) })
		}
	}

	// What a policy namespace holds, created as the administrator.
	policy := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: apps},
		Spec: v1alpha1.TokenPolicySpec{Audiences: []string{"payments-api"}}}
	keys := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "payments-signing-keys", Namespace: apps,
		Labels: map[string]string{v1alpha1.LabelComponent: v1alpha1.ComponentSigningKeys}}}
	shard := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "payments-revocations-0", Namespace: apps,
		Labels: map[string]string{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}}}
	for _, o := range []client.Object{policy, keys, shard} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}

	issuer := impersonate(t, release, prefix+"-issuer")
	controller := impersonate(t, release, prefix+"-controller")

	// RBAC reaches the authorizer through its informers: wait until each binding shows.
	ready := map[string]func() error{
		"the issuer lists Secrets": func() error { return issuer.List(ctx, &corev1.SecretList{}, client.InNamespace(apps)) },
		"the controller lists ConfigMaps": func() error {
			return controller.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(apps))
		},
		"the controller lists Leases in the release namespace": func() error {
			return controller.List(ctx, &coordinationv1.LeaseList{}, client.InNamespace(release))
		},
	}
	for what, do := range ready {
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			err := do()
			return err == nil, fmt.Sprintf("%s: got %v; want allowed", what, err)
		})
	}

	components, err := labels.Parse(v1alpha1.LabelComponent + " in (signing-keys,users)")
	if err != nil {
		t.Fatal(err)
	}
	secretsOfComponents := client.MatchingLabelsSelector{Selector: components}
	newConfigMap := func() *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "payments-revocations-", Namespace: apps}}
	}
	newSecret := func() *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "payments-signing-keys-", Namespace: apps}}
	}
	touch := func(o client.Object) client.Object {
		o.SetAnnotations(map[string]string{"tokenwarden.io/touched": time.Now().UTC().Format(time.RFC3339Nano)})
		return o
	}
	// fresh is o as the API server holds it now (read as the administrator), for an update or a delete.
	fresh := func(o client.Object) client.Object {
		o = o.DeepCopyObject().(client.Object)
		_ = env.Client.Get(ctx, client.ObjectKeyFromObject(o), o) // on error, the request that follows fails
		return o
	}
	mergePatch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"tokenwarden.io/patched":"yes"}}}`))
	deployment := func() *appsv1.Deployment {
		labels := map[string]string{"app": "intruder"}
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{GenerateName: "intruder-", Namespace: apps},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
	}
	event := func() *eventsv1.Event {
		return &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "payments-", Namespace: apps},
			EventTime: metav1.NewMicroTime(time.Now()), ReportingController: "tokenwarden.io/issuer", ReportingInstance: "issuer-0",
			Action: "Refresh", Reason: "RefreshTokenReused", Type: corev1.EventTypeWarning, Note: "a test event",
			Regarding: corev1.ObjectReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "TokenPolicy", Namespace: apps, Name: policy.Name}}
	}
	tokenReview := func() *authenticationv1.TokenReview {
		return &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: "not-a-token"}}
	}
	lease := func(ns string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{GenerateName: "tokenwarden-", Namespace: ns},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("test")}}
	}
	// Requests neither ServiceAccount may make.
	neither := func(c client.Client) []access {
		return []access{
			{"lists Pods", false, func(ctx context.Context) error { return c.List(ctx, &corev1.PodList{}, client.InNamespace(apps)) }},
			{"gets a Pod", false, func(ctx context.Context) error {
				return c.Get(ctx, client.ObjectKey{Namespace: apps, Name: "any"}, &corev1.Pod{})
			}},
			{"lists Roles", false, func(ctx context.Context) error { return c.List(ctx, &rbacv1.RoleList{}, client.InNamespace(release)) }},
			{"gets a Role", false, func(ctx context.Context) error {
				return c.Get(ctx, client.ObjectKey{Namespace: release, Name: "tokenwarden-leader-election"}, &rbacv1.Role{})
			}},
			{"lists ClusterRoles", false, func(ctx context.Context) error { return c.List(ctx, &rbacv1.ClusterRoleList{}) }},
			{"lists Deployments", false, func(ctx context.Context) error {
				return c.List(ctx, &appsv1.DeploymentList{}, client.InNamespace(apps))
			}},
			{"creates a Deployment", false, func(ctx context.Context) error { return c.Create(ctx, deployment()) }},
			{"deletes a Secret", false, func(ctx context.Context) error { return c.Delete(ctx, fresh(keys)) }},
		}
	}

	tests := map[string][]access{
		"issuer": append([]access{
			{"lists the labelled Secrets of every namespace", true, func(ctx context.Context) error {
				return issuer.List(ctx, &corev1.SecretList{}, secretsOfComponents)
			}},
			{"gets a signing-key Secret", true, func(ctx context.Context) error {
				return issuer.Get(ctx, client.ObjectKeyFromObject(keys), &corev1.Secret{})
			}},
			{"lists the TokenPolicies of every namespace", true, func(ctx context.Context) error {
				return issuer.List(ctx, &v1alpha1.TokenPolicyList{})
			}},
			{"lists the revocation shards of every namespace", true, func(ctx context.Context) error {
				return issuer.List(ctx, &corev1.ConfigMapList{}, client.MatchingLabels{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations})
			}},
			{"updates a revocation shard", true, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(shard))) }},
			{"creates a TokenReview", true, func(ctx context.Context) error { return issuer.Create(ctx, tokenReview()) }},
			{"creates an events.k8s.io Event", true, func(ctx context.Context) error { return issuer.Create(ctx, event()) }},
			{"creates a ConfigMap (a sealed segment)", true, func(ctx context.Context) error { return issuer.Create(ctx, newConfigMap()) }},
			{"patches a revocation shard", false, func(ctx context.Context) error { return issuer.Patch(ctx, fresh(shard), mergePatch) }},
			{"deletes a revocation shard", false, func(ctx context.Context) error { return issuer.Delete(ctx, fresh(shard)) }},
			{"creates a Secret", false, func(ctx context.Context) error { return issuer.Create(ctx, newSecret()) }},
			{"updates a Secret", false, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(keys))) }},
			{"patches a Secret", false, func(ctx context.Context) error { return issuer.Patch(ctx, fresh(keys), mergePatch) }},
			{"updates a TokenPolicy", false, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(policy))) }},
			{"updates a TokenPolicy's status", false, func(ctx context.Context) error {
				return issuer.Status().Update(ctx, fresh(policy))
			}},
			{"lists TokenRevocations", false, func(ctx context.Context) error { return issuer.List(ctx, &v1alpha1.TokenRevocationList{}) }},
			{"creates a Lease", false, func(ctx context.Context) error { return issuer.Create(ctx, lease(release)) }},
			{"creates a core Event", false, func(ctx context.Context) error {
				return issuer.Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "payments-", Namespace: apps},
					InvolvedObject: corev1.ObjectReference{Kind: "TokenPolicy", Namespace: apps, Name: policy.Name}, Reason: "Test"})
			}},
		}, neither(issuer)...),
		"controller": append([]access{
			{"lists the TokenPolicies of every namespace", true, func(ctx context.Context) error {
				return controller.List(ctx, &v1alpha1.TokenPolicyList{})
			}},
			{"updates a TokenPolicy's status", true, func(ctx context.Context) error {
				return controller.Status().Update(ctx, fresh(policy))
			}},
			{"creates a Secret", true, func(ctx context.Context) error { return controller.Create(ctx, newSecret()) }},
			{"patches a signing-key Secret", true, func(ctx context.Context) error {
				return controller.Patch(ctx, fresh(keys), mergePatch)
			}},
			{"creates a ConfigMap", true, func(ctx context.Context) error { return controller.Create(ctx, newConfigMap()) }},
			{"creates a Lease in the release namespace", true, func(ctx context.Context) error { return controller.Create(ctx, lease(release)) }},
			{"creates an events.k8s.io Event", true, func(ctx context.Context) error { return controller.Create(ctx, event()) }},
			{"updates a TokenPolicy's spec", false, func(ctx context.Context) error { return controller.Update(ctx, touch(fresh(policy))) }},
			{"deletes a TokenPolicy", false, func(ctx context.Context) error { return controller.Delete(ctx, fresh(policy)) }},
			{"creates a TokenReview", false, func(ctx context.Context) error { return controller.Create(ctx, tokenReview()) }},
		}, neither(controller)...),
	}
	for component, accesses := range tests {
		for _, a := range accesses {
			t.Run(fmt.Sprintf("the %s %s", component, a.what), func(t *testing.T) {
				err := a.do(ctx)
				switch {
				case a.allowed && err != nil:
					t.Errorf("got %v; want it allowed", err)
				case !a.allowed && !apierrors.IsForbidden(err):
					t.Errorf("got %v; want Forbidden", errOrSuccess(err))
				}
			})
		}
	}
	// The revocation shard and the signing keys the forbidden requests aimed at are still there.
	for _, o := range []client.Object{shard, keys, policy} {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Errorf("get %s after the forbidden requests: got %v; want it still there", o.GetName(), err)
		}
	}
}

func errOrSuccess(err error) any {
	if err == nil {
		return "success"
	}
	return err
}

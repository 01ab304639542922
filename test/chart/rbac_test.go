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

// The issuer's grants: everything it needs, and no more. Cluster-wide it reads policies, reviews
// ServiceAccount tokens and records events; in its own namespace it reads Secrets (signing keys, users,
// the peer key) and ConfigMaps (revocation objects) through informers, updates journals, creates sealed
// segments, and holds the Leases that elect each journal's owner.
var (
	issuerClusterGrants = []string{
		"create authentication.k8s.io/tokenreviews",
		"create events.k8s.io/events",
		"get tokenwarden.io/tokenpolicies",
		"list tokenwarden.io/tokenpolicies",
		"patch events.k8s.io/events",
		"watch tokenwarden.io/tokenpolicies",
	}
	issuerNamespaceGrants = []string{
		"create configmaps", "create coordination.k8s.io/leases",
		"delete coordination.k8s.io/leases",
		"get configmaps", "get coordination.k8s.io/leases", "get secrets",
		"list configmaps", "list coordination.k8s.io/leases", "list secrets",
		"update configmaps", "update coordination.k8s.io/leases",
		"watch configmaps", "watch coordination.k8s.io/leases", "watch secrets",
	}
)

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
	for name, objs := range map[string][]*unstructured.Unstructured{
		"the chart":     renderChart(t, defaultRelease, defaultNamespace, ""),
		"config/issuer": renderKustomize(t),
	} {
		if got := grants(t, find(t, objs, "ClusterRole", "tokenwarden-issuer")); !slices.Equal(got, issuerClusterGrants) {
			t.Errorf("%s: the issuer's ClusterRole:\ngot  %q;\nwant %q (no Secrets, no ConfigMaps, no Leases)", name, got, issuerClusterGrants)
		}
		role := find(t, objs, "Role", "tokenwarden-issuer")
		if got := grants(t, role); !slices.Equal(got, issuerNamespaceGrants) {
			t.Errorf("%s: the issuer's Role:\ngot  %q;\nwant %q", name, got, issuerNamespaceGrants)
		}
		if role.GetNamespace() != defaultNamespace {
			t.Errorf("%s: the issuer's Role is in %q; want the release namespace %q", name, role.GetNamespace(), defaultNamespace)
		}
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
	release := restrictedNamespace(t) // the release namespace
	checkLeastPrivilege(t, renderChart(t, "least-privilege", release, ""), release, "least-privilege-tokenwarden")
}

func TestTheKustomizeServiceAccountsCanDoOnlyWhatTheirComponentNeeds(t *testing.T) {
	var objs []*unstructured.Unstructured
	for _, o := range renderKustomize(t) {
		if o.GetKind() == "Namespace" { // created below, without its Pod Security label's ceremony
			continue
		}
		objs = append(objs, o)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: defaultNamespace}}
	if err := env.Client.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	checkLeastPrivilege(t, objs, defaultNamespace, "tokenwarden")
}

// checkLeastPrivilege installs the ServiceAccounts and RBAC of an installation (objs) whose namespace is
// release and whose object names start with prefix, and impersonates each ServiceAccount to show what it
// may and may not do. The issuer reaches Secrets, ConfigMaps and Leases only in the release namespace; a
// tenant's namespace and kube-system are out of its reach.
func checkLeastPrivilege(t *testing.T, objs []*unstructured.Unstructured, release, prefix string) {
	ctx := context.Background()
	apps := env.Namespace(t) // a tenant namespace with a policy, its keys, users, and the previous layout's shard
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
		default:
			continue
		}
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", identity(o), err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), o) })
	}

	// What a policy namespace holds, created as the administrator.
	policy := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: apps},
		Spec: v1alpha1.TokenPolicySpec{Audiences: []string{"payments-api"}}}
	keys := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "payments-signing-keys", Namespace: apps,
		Labels: map[string]string{v1alpha1.LabelComponent: v1alpha1.ComponentSigningKeys}}}
	tenantConfig := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "payments-revocations-0", Namespace: apps,
		Labels: map[string]string{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}}}
	// What the controller materialises in the release namespace.
	ownKeys := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "default.payments.x-signing-keys", Namespace: release,
		Labels: map[string]string{v1alpha1.LabelComponent: v1alpha1.ComponentSigningKeys}}}
	shard := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "default.payments.x-revocations-0", Namespace: release,
		Labels: map[string]string{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}}}
	peerKey := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-issuer-peer", Namespace: release,
		Labels: map[string]string{v1alpha1.LabelComponent: "issuer-peer"}}, Data: map[string][]byte{"key": make([]byte, 32)}}
	// A journal owner's Lease in the release namespace, and a system component's.
	ownerLease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "default.payments.x-journal", Namespace: release},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("issuer-0")}}
	systemConfig := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns-" + apps, Namespace: "kube-system"}}
	systemLease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "kube-scheduler-" + apps, Namespace: "kube-system"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("scheduler-0")}}
	for _, o := range []client.Object{policy, keys, tenantConfig, ownKeys, peerKey, shard, ownerLease, systemConfig, systemLease} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), systemLease) })

	issuer := impersonate(t, release, prefix+"-issuer")
	controller := impersonate(t, release, prefix+"-controller")

	// RBAC reaches the authorizer through its informers: wait until each binding shows.
	ready := map[string]func() error{
		"the issuer lists the Secrets of its namespace": func() error {
			return issuer.List(ctx, &corev1.SecretList{}, client.InNamespace(release))
		},
		"the issuer lists TokenPolicies": func() error { return issuer.List(ctx, &v1alpha1.TokenPolicyList{}) },
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
	newConfigMap := func(ns string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "payments-revocations-", Namespace: ns}}
	}
	newSecret := func(ns string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "payments-signing-keys-", Namespace: ns}}
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
			{"deletes a Pod", false, func(ctx context.Context) error {
				return c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: "any"}})
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
		}
	}

	tests := map[string][]access{
		"issuer": append([]access{
			// Its own namespace: what the controller materialises there.
			{"lists the labelled Secrets of its namespace", true, func(ctx context.Context) error {
				return issuer.List(ctx, &corev1.SecretList{}, secretsOfComponents, client.InNamespace(release))
			}},
			{"gets a signing-key Secret of its namespace", true, func(ctx context.Context) error {
				return issuer.Get(ctx, client.ObjectKeyFromObject(ownKeys), &corev1.Secret{})
			}},
			{"lists the revocation objects of its namespace", true, func(ctx context.Context) error {
				return issuer.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(release), client.MatchingLabels{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations})
			}},
			{"updates a revocation shard of its namespace", true, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(shard))) }},
			{"creates a ConfigMap of its namespace (a sealed segment)", true, func(ctx context.Context) error { return issuer.Create(ctx, newConfigMap(release)) }},
			{"patches a revocation shard", false, func(ctx context.Context) error { return issuer.Patch(ctx, fresh(shard), mergePatch) }},
			{"deletes a revocation shard", false, func(ctx context.Context) error { return issuer.Delete(ctx, fresh(shard)) }},
			{"creates a Secret of its namespace", false, func(ctx context.Context) error { return issuer.Create(ctx, newSecret(release)) }},
			{"updates a Secret of its namespace", false, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(ownKeys))) }},
			{"patches a Secret of its namespace", false, func(ctx context.Context) error { return issuer.Patch(ctx, fresh(ownKeys), mergePatch) }},
			{"deletes a Secret of its namespace", false, func(ctx context.Context) error { return issuer.Delete(ctx, fresh(ownKeys)) }},
			{"gets the peer key by name", true, func(ctx context.Context) error {
				return issuer.Get(ctx, client.ObjectKeyFromObject(peerKey), &corev1.Secret{})
			}},
			{"updates the peer key", false, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(peerKey))) }},
			{"patches the peer key", false, func(ctx context.Context) error { return issuer.Patch(ctx, fresh(peerKey), mergePatch) }},
			{"deletes the peer key", false, func(ctx context.Context) error { return issuer.Delete(ctx, fresh(peerKey)) }},
			// Leases of its own namespace: one per policy elects the owner of its journal.
			{"creates a Lease of its namespace", true, func(ctx context.Context) error { return issuer.Create(ctx, lease(release)) }},
			{"lists the Leases of its namespace", true, func(ctx context.Context) error {
				return issuer.List(ctx, &coordinationv1.LeaseList{}, client.InNamespace(release))
			}},
			{"updates a Lease of its namespace (renews or takes over a journal)", true, func(ctx context.Context) error {
				return issuer.Update(ctx, touch(fresh(ownerLease)))
			}},
			{"patches a Lease of its namespace", false, func(ctx context.Context) error { return issuer.Patch(ctx, fresh(ownerLease), mergePatch) }},
			{"deletes a Lease of its namespace (gives a journal up)", true, func(ctx context.Context) error { return issuer.Delete(ctx, fresh(ownerLease)) }},
			// Every other namespace: nothing of Secrets and ConfigMaps.
			{"lists the Secrets of every namespace", false, func(ctx context.Context) error {
				return issuer.List(ctx, &corev1.SecretList{}, secretsOfComponents)
			}},
			{"lists the Secrets of kube-system", false, func(ctx context.Context) error {
				return issuer.List(ctx, &corev1.SecretList{}, client.InNamespace("kube-system"))
			}},
			{"gets a Secret of kube-system", false, func(ctx context.Context) error {
				return issuer.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "bootstrap-token-abcdef"}, &corev1.Secret{})
			}},
			{"lists the Secrets of a tenant's namespace", false, func(ctx context.Context) error {
				return issuer.List(ctx, &corev1.SecretList{}, client.InNamespace(apps))
			}},
			{"gets a tenant's signing-key Secret", false, func(ctx context.Context) error {
				return issuer.Get(ctx, client.ObjectKeyFromObject(keys), &corev1.Secret{})
			}},
			{"lists the ConfigMaps of every namespace", false, func(ctx context.Context) error { return issuer.List(ctx, &corev1.ConfigMapList{}) }},
			{"lists the ConfigMaps of a tenant's namespace", false, func(ctx context.Context) error {
				return issuer.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(apps))
			}},
			{"updates a ConfigMap of a tenant's namespace", false, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(tenantConfig))) }},
			{"creates a ConfigMap in a tenant's namespace", false, func(ctx context.Context) error { return issuer.Create(ctx, newConfigMap(apps)) }},
			{"creates a ConfigMap in kube-system", false, func(ctx context.Context) error { return issuer.Create(ctx, newConfigMap("kube-system")) }},
			{"creates a Secret in kube-system", false, func(ctx context.Context) error { return issuer.Create(ctx, newSecret("kube-system")) }},
			{"creates a Secret in a tenant's namespace", false, func(ctx context.Context) error { return issuer.Create(ctx, newSecret(apps)) }},
			{"updates a tenant's signing-key Secret", false, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(keys))) }},
			{"creates a Lease in kube-system", false, func(ctx context.Context) error { return issuer.Create(ctx, lease("kube-system")) }},
			{"creates a Lease in a tenant's namespace", false, func(ctx context.Context) error { return issuer.Create(ctx, lease(apps)) }},
			{"updates a Lease of kube-system", false, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(systemLease))) }},
			{"deletes a Lease of kube-system", false, func(ctx context.Context) error { return issuer.Delete(ctx, fresh(systemLease)) }},
			{"lists the Leases of every namespace", false, func(ctx context.Context) error { return issuer.List(ctx, &coordinationv1.LeaseList{}) }},
			{"updates a ConfigMap of kube-system", false, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(systemConfig))) }},
			{"patches a ConfigMap of kube-system", false, func(ctx context.Context) error { return issuer.Patch(ctx, fresh(systemConfig), mergePatch) }},
			// The rest of what it may do, cluster-wide.
			{"lists the TokenPolicies of every namespace", true, func(ctx context.Context) error {
				return issuer.List(ctx, &v1alpha1.TokenPolicyList{})
			}},
			{"creates a TokenReview", true, func(ctx context.Context) error { return issuer.Create(ctx, tokenReview()) }},
			{"creates an events.k8s.io Event", true, func(ctx context.Context) error { return issuer.Create(ctx, event()) }},
			{"updates a TokenPolicy", false, func(ctx context.Context) error { return issuer.Update(ctx, touch(fresh(policy))) }},
			{"updates a TokenPolicy's status", false, func(ctx context.Context) error {
				return issuer.Status().Update(ctx, fresh(policy))
			}},
			{"lists TokenRevocations", false, func(ctx context.Context) error { return issuer.List(ctx, &v1alpha1.TokenRevocationList{}) }},
			{"lists Pods", false, func(ctx context.Context) error { return issuer.List(ctx, &corev1.PodList{}, client.InNamespace(apps)) }},
			{"lists ServiceAccounts", false, func(ctx context.Context) error {
				return issuer.List(ctx, &corev1.ServiceAccountList{}, client.InNamespace(apps))
			}},
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
			{"patches a TokenPolicy (its finalizer)", true, func(ctx context.Context) error {
				return controller.Patch(ctx, fresh(policy), mergePatch)
			}},
			{"lists the Secrets of every namespace (their metadata is all it caches)", true, func(ctx context.Context) error {
				return controller.List(ctx, &corev1.SecretList{})
			}},
			{"creates a Secret", true, func(ctx context.Context) error { return controller.Create(ctx, newSecret(apps)) }},
			{"patches a signing-key Secret", true, func(ctx context.Context) error {
				return controller.Patch(ctx, fresh(keys), mergePatch)
			}},
			{"deletes a materialised Secret", true, func(ctx context.Context) error { return controller.Delete(ctx, fresh(ownKeys)) }},
			{"creates a ConfigMap", true, func(ctx context.Context) error { return controller.Create(ctx, newConfigMap(release)) }},
			{"creates a Lease in the release namespace", true, func(ctx context.Context) error { return controller.Create(ctx, lease(release)) }},
			{"creates an events.k8s.io Event", true, func(ctx context.Context) error { return controller.Create(ctx, event()) }},
			{"lists Pods (what a session may be bound to)", true, func(ctx context.Context) error {
				return controller.List(ctx, &corev1.PodList{}, client.InNamespace(apps))
			}},
			{"lists ServiceAccounts", true, func(ctx context.Context) error {
				return controller.List(ctx, &corev1.ServiceAccountList{}, client.InNamespace(apps))
			}},
			{"deletes a TokenPolicy", false, func(ctx context.Context) error { return controller.Delete(ctx, fresh(policy)) }},
			{"creates a TokenReview", false, func(ctx context.Context) error { return controller.Create(ctx, tokenReview()) }},
		}, neither(controller)...),
	}
	for _, component := range []string{"issuer", "controller"} { // the controller's allowed deletions come last
		checkAccesses(t, "the "+component+" ", tests[component])
	}
	// What the issuer's forbidden requests aimed at is still there.
	for _, o := range []client.Object{shard, keys, peerKey, policy, tenantConfig, systemConfig, systemLease} {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Errorf("get %s after the forbidden requests: got %v; want it still there", o.GetName(), err)
		}
	}
	for _, o := range []client.Object{systemConfig, systemLease, peerKey} {
		if got := o.GetAnnotations(); len(got) != 0 {
			t.Errorf("%s was changed: annotations %v", o.GetName(), got)
		}
	}
}

// TestTheViewerRolesLetOnCallReadRevocationsAndNothingElse binds the chart's viewer roles to a person, as
// the README says, and checks what `kubectl tokenwarden status/sessions/inspect` read, and nothing more.
func TestTheViewerRolesLetOnCallReadRevocationsAndNothingElse(t *testing.T) {
	ctx := context.Background()
	release, apps := restrictedNamespace(t), env.Namespace(t)
	for _, o := range renderChart(t, "viewer", release, "") {
		switch o.GetKind() {
		case "ClusterRole", "Role":
			if !strings.HasSuffix(o.GetName(), "-revocation-viewer") {
				continue
			}
		default:
			continue
		}
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), o) })
	}
	subject := []rbacv1.Subject{{Kind: "User", Name: "oncall-" + apps, APIGroup: rbacv1.GroupName}}
	ref := func(kind string) rbacv1.RoleRef {
		return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: "viewer-tokenwarden-revocation-viewer"}
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "oncall-" + apps}, RoleRef: ref("ClusterRole"), Subjects: subject}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "oncall", Namespace: release}, RoleRef: ref("Role"), Subjects: subject}
	for _, o := range []client.Object{crb, rb} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), crb) })
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "oncall-" + apps}
	oncall, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		err := oncall.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(release))
		return err == nil, fmt.Sprintf("list the revocation ConfigMaps: %v", err)
	})
	checkAccesses(t, "on-call ", []access{
		{"lists TokenPolicies", true, func(ctx context.Context) error { return oncall.List(ctx, &v1alpha1.TokenPolicyList{}) }},
		{"lists TokenRevocations", true, func(ctx context.Context) error { return oncall.List(ctx, &v1alpha1.TokenRevocationList{}) }},
		{"lists the ConfigMaps of the release namespace", true, func(ctx context.Context) error {
			return oncall.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(release))
		}},
		{"lists the ConfigMaps of a tenant's namespace", false, func(ctx context.Context) error {
			return oncall.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(apps))
		}},
		{"lists the Secrets of the release namespace", false, func(ctx context.Context) error {
			return oncall.List(ctx, &corev1.SecretList{}, client.InNamespace(release))
		}},
		{"creates a TokenRevocation", false, func(ctx context.Context) error {
			return oncall.Create(ctx, &v1alpha1.TokenRevocation{ObjectMeta: metav1.ObjectMeta{GenerateName: "r-", Namespace: apps},
				Spec: v1alpha1.TokenRevocationSpec{PolicyName: "payments", Subject: "bob"}})
		}},
		{"updates a TokenPolicy", false, func(ctx context.Context) error {
			return oncall.Create(ctx, &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: apps},
				Spec: v1alpha1.TokenPolicySpec{Audiences: []string{"a"}}})
		}},
	})
}

// checkAccesses makes each request, one subtest each, and checks it is allowed or Forbidden as it says.
func checkAccesses(t *testing.T, who string, accesses []access) {
	for _, a := range accesses {
		t.Run(who+a.what, func(t *testing.T) {
			err := a.do(context.Background())
			switch {
			case a.allowed && err != nil:
				t.Errorf("got %v; want it allowed", err)
			case !a.allowed && !apierrors.IsForbidden(err):
				t.Errorf("got %v; want Forbidden", errOrSuccess(err))
			}
		})
	}
}

func errOrSuccess(err error) any {
	if err == nil {
		return "success"
	}
	return err
}

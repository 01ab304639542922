package chart

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

var env *testenv.Env

var runtimeConverter = runtime.DefaultUnstructuredConverter

func TestMain(m *testing.M) {
	testenv.Main(m, &env, installServiceMonitorCRD, installCertificateCRD)
}

// The release every comparison with the kustomize installation uses: its names are then the same.
const (
	defaultRelease   = "tokenwarden"
	defaultNamespace = "tokenwarden-system"
)

func chartDir() string { return filepath.Join(testenv.RepoRoot(), "charts", "tokenwarden") }

// helm runs the helm binary of KUBEBUILDER_ASSETS with a home of its own, and returns its standard
// output, or an error carrying its standard error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm: %v (KUBEBUILDER_ASSETS must be the folder hack/control-plane.sh prints)", err)
	}
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// valuesFile writes values (YAML) to a file of the test's own and returns its path.
func valuesFile(t *testing.T, values string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(path, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// renderChart runs helm template (CRDs included) for release in namespace with the values given (YAML;
// empty means the defaults), and decodes every object.
func renderChart(t *testing.T, release, namespace, values string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", release, chartDir(), "--namespace", namespace, "--include-crds"}
	if values != "" {
		args = append(args, "--values", valuesFile(t, values))
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("render the chart: %v", err)
	}
	return decode(t, out)
}

// renderKustomize builds config/default the way kubectl kustomize does.
func renderKustomize(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(testenv.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatalf("kustomize build config/default: %v", err)
	}
	out, err := resources.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build config/default: %v", err)
	}
	return decode(t, string(out))
}

// decode splits a YAML stream into objects, refusing duplicate keys, and skips empty documents.
func decode(t *testing.T, stream string) []*unstructured.Unstructured {
	t.Helper()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("read YAML: %v", err)
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Fatalf("decode YAML: %v\n%s", err, doc)
		}
		if string(j) == "null" {
			continue
		}
		o := &unstructured.Unstructured{}
		if err := o.UnmarshalJSON(j); err != nil {
			t.Fatalf("decode object: %v\n%s", err, doc)
		}
		objs = append(objs, o)
	}
}

// readObjects decodes a YAML file of the repository.
func readObjects(t *testing.T, path ...string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{testenv.RepoRoot()}, path...)...))
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, string(b))
}

// find returns the object of kind and name, failing the test when there is none.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %q among %s; want one", kind, name, identities(objs))
	return nil
}

// identities lists objects as kind/namespace/name, sorted.
func identities(objs []*unstructured.Unstructured) []string {
	ids := make([]string, 0, len(objs))
	for _, o := range objs {
		ids = append(ids, identity(o))
	}
	slices.Sort(ids)
	return ids
}

func identity(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s/%s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
}

// warnings collects the warnings the API server answers with (deprecated APIs, ignored fields...).
type warnings struct {
	mu   sync.Mutex
	seen []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := w.seen
	w.seen = nil
	return seen
}

// dryRun submits every object to the API server with server-side dry run and strict field validation, so
// that an unknown field, a wrong type or an invalid value fails the test; a warning fails it too.
// Namespaces and ServiceAccounts are created for real first (pods need both). Objects that exist already
// (the CRDs, installed by the test environment) are submitted as dry-run updates. Each Deployment's pod
// template is also submitted as a dry-run Pod, so that admission (Pod Security in a namespace labelled
// "restricted", ServiceAccounts, priority classes) judges the pods the Deployment would make.
func dryRun(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	w := &warnings{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandlerWithContext = w
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	strict := client.FieldValidation(metav1.FieldValidationStrict)
	submit := func(o *unstructured.Unstructured, opts ...client.CreateOption) error {
		err := c.Create(ctx, o, append(opts, strict)...)
		if apierrors.IsAlreadyExists(err) {
			existing := &unstructured.Unstructured{}
			existing.SetGroupVersionKind(o.GroupVersionKind())
			if err = c.Get(ctx, client.ObjectKeyFromObject(o), existing); err == nil {
				o.SetResourceVersion(existing.GetResourceVersion())
				err = c.Update(ctx, o, client.DryRunAll, strict)
			}
		}
		return err
	}
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: got %v; want it accepted", what, err)
		}
		if seen := w.take(); len(seen) > 0 {
			t.Errorf("%s: got warnings %q; want none", what, seen)
		}
	}
	for _, kind := range []string{"Namespace", "ServiceAccount"} {
		for _, o := range objs {
			if o.GetKind() == kind {
				check("create "+identity(o), submit(o.DeepCopy()))
			}
		}
	}
	for _, o := range objs {
		if k := o.GetKind(); k == "Namespace" || k == "ServiceAccount" {
			continue
		}
		check("dry run of "+identity(o), submit(o.DeepCopy(), client.DryRunAll))
		if o.GetKind() != "Deployment" {
			continue
		}
		tmpl, _, _ := unstructured.NestedMap(o.Object, "spec", "template")
		pod := &unstructured.Unstructured{Object: tmpl}
		pod.SetAPIVersion("v1")
		pod.SetKind("Pod")
		pod.SetNamespace(o.GetNamespace())
		pod.SetName(o.GetName() + "-pod")
		check("dry run of the pod of "+identity(o), c.Create(ctx, pod, client.DryRunAll, strict))
	}
}

// restrictedNamespace creates a namespace of the test's own where Pod Security admission enforces the
// "restricted" standard, as the kustomize installation's namespace does.
func restrictedNamespace(t *testing.T) string {
	t.Helper()
	name := env.Namespace(t)
	ns := &corev1.Namespace{}
	ctx := context.Background()
	if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		t.Fatal(err)
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	if err := env.Client.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	return name
}

// installServiceMonitorCRD installs a ServiceMonitor CRD holding the part of the Prometheus Operator's
// schema the chart uses, so that a dry run of the chart's ServiceMonitor checks its fields.
func installServiceMonitorCRD(e *testenv.Env) error {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	duration := apiextensionsv1.JSONSchemaProps{Type: "string", Pattern: `^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`}
	stringList := apiextensionsv1.JSONSchemaProps{Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &str}}
	selector := apiextensionsv1.JSONSchemaProps{Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
		"matchLabels": {Type: "object", AdditionalProperties: &apiextensionsv1.JSONSchemaPropsOrBool{Schema: &str}},
		"matchExpressions": {Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &apiextensionsv1.JSONSchemaProps{
			Type: "object", Required: []string{"key", "operator"},
			Properties: map[string]apiextensionsv1.JSONSchemaProps{"key": str, "operator": str, "values": stringList},
		}}},
	}}
	endpoint := apiextensionsv1.JSONSchemaProps{Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
		"port": str, "path": str, "interval": duration, "scrapeTimeout": duration,
		"scheme": {Type: "string", Enum: []apiextensionsv1.JSON{{Raw: []byte(`"http"`)}, {Raw: []byte(`"https"`)}}},
	}}
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "servicemonitors.monitoring.coreos.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "monitoring.coreos.com", Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: "ServiceMonitor", ListKind: "ServiceMonitorList", Plural: "servicemonitors", Singular: "servicemonitor"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", Required: []string{"selector"}, Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"jobLabel": str,
							"selector": selector,
							"namespaceSelector": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
								"any": {Type: "boolean"}, "matchNames": stringList,
							}},
							"endpoints": {Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &endpoint}},
						}},
					},
				}},
			}},
		},
	}
	_, err := envtest.InstallCRDs(e.Config, envtest.CRDInstallOptions{CRDs: []*apiextensionsv1.CustomResourceDefinition{crd}})
	return err
}

// installCertificateCRD installs a cert-manager Certificate CRD holding the part of cert-manager's schema
// the chart uses, so that a dry run of the chart's Certificate checks its fields.
func installCertificateCRD(e *testenv.Env) error {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	spec := apiextensionsv1.JSONSchemaProps{Type: "object", Required: []string{"secretName", "issuerRef"}, Properties: map[string]apiextensionsv1.JSONSchemaProps{
		"secretName": str,
		"dnsNames":   {Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &str}},
		"privateKey": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"algorithm":      {Type: "string", Enum: []apiextensionsv1.JSON{{Raw: []byte(`"RSA"`)}, {Raw: []byte(`"ECDSA"`)}, {Raw: []byte(`"Ed25519"`)}}},
			"size":           {Type: "integer"},
			"rotationPolicy": {Type: "string", Enum: []apiextensionsv1.JSON{{Raw: []byte(`"Never"`)}, {Raw: []byte(`"Always"`)}}},
		}},
		"issuerRef": {Type: "object", Required: []string{"name"}, Properties: map[string]apiextensionsv1.JSONSchemaProps{"name": str, "kind": str, "group": str}},
	}}
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "certificates.cert-manager.io"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "cert-manager.io", Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: "Certificate", ListKind: "CertificateList", Plural: "certificates", Singular: "certificate"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"apiVersion": str, "kind": str, "metadata": {Type: "object"}, "spec": spec,
					}}}}},
		},
	}
	_, err := envtest.InstallCRDs(e.Config, envtest.CRDInstallOptions{CRDs: []*apiextensionsv1.CustomResourceDefinition{crd}})
	return err
}

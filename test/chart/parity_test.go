package chart

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The chart labels its objects with the release (app.kubernetes.io/instance) and Helm's own labels; the
// kustomize installation, a single instance, does not. Everything else must be the same.
const instanceLabel = "app.kubernetes.io/instance"

// withoutInstance returns a copy of v with every app.kubernetes.io/instance key removed, at any depth.
func withoutInstance(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			if k != instanceLabel {
				out[k] = withoutInstance(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = withoutInstance(x)
		}
		return out
	default:
		return v
	}
}

func field(o *unstructured.Unstructured, path ...string) any {
	v, _, _ := unstructured.NestedFieldNoCopy(o.Object, path...)
	return withoutInstance(v)
}

func TestTheKustomizeInstallationIsTheChartsDefaultInstallation(t *testing.T) {
	chart := renderChart(t, defaultRelease, defaultNamespace, "")
	kustomize := renderKustomize(t)

	var kustomizeObjects []*unstructured.Unstructured
	for _, o := range kustomize {
		if o.GetKind() != "Namespace" { // helm install --create-namespace makes it; the chart does not hold it
			kustomizeObjects = append(kustomizeObjects, o)
		}
	}
	if got, want := identities(kustomizeObjects), identities(chart); !slices.Equal(got, want) {
		t.Errorf("objects of config/default:\ngot  %q;\nwant the chart's %q", got, want)
	}

	for _, name := range []string{"tokenwarden-controller", "tokenwarden-issuer"} {
		k, c := find(t, kustomize, "Deployment", name), find(t, chart, "Deployment", name)
		for _, path := range [][]string{
			{"spec", "replicas"},
			{"spec", "template", "spec", "serviceAccountName"},
			{"spec", "template", "spec", "containers"}, // image, args, ports, probes, security, resources
		} {
			if name == "tokenwarden-controller" && path[len(path)-1] == "containers" {
				// config/manager's controller: compare what makes it the same installation.
				kc, cc := container(t, k), container(t, c)
				if !slices.Equal(kc.Args, cc.Args) || kc.Image != cc.Image {
					t.Errorf("Deployment %s: config/default runs %s %q; want the chart's %s %q", name, kc.Image, kc.Args, cc.Image, cc.Args)
				}
				continue
			}
			if got, want := field(k, path...), field(c, path...); !reflect.DeepEqual(got, want) {
				t.Errorf("Deployment %s %s:\ngot  %v;\nwant the chart's %v", name, strings.Join(path, "."), got, want)
			}
		}
	}
	// The issuer's whole pod spec (scheduling, probes, security, grace period) is the chart's.
	if got, want := field(find(t, kustomize, "Deployment", "tokenwarden-issuer"), "spec", "template", "spec"),
		field(find(t, chart, "Deployment", "tokenwarden-issuer"), "spec", "template", "spec"); !reflect.DeepEqual(got, want) {
		t.Errorf("issuer pod spec:\ngot  %v;\nwant the chart's %v", got, want)
	}
	for _, c := range []struct{ kind, name string }{
		{"Service", "tokenwarden-issuer"}, {"PodDisruptionBudget", "tokenwarden-issuer"},
	} {
		if got, want := field(find(t, kustomize, c.kind, c.name), "spec"), field(find(t, chart, c.kind, c.name), "spec"); !reflect.DeepEqual(got, want) {
			t.Errorf("%s %s spec:\ngot  %v;\nwant the chart's %v", c.kind, c.name, got, want)
		}
	}
	for _, c := range []struct{ kind, name string }{
		{"ClusterRoleBinding", "tokenwarden-controller"}, {"ClusterRoleBinding", "tokenwarden-issuer"},
		{"RoleBinding", "tokenwarden-leader-election"},
	} {
		for _, f := range []string{"roleRef", "subjects"} {
			if got, want := field(find(t, kustomize, c.kind, c.name), f), field(find(t, chart, c.kind, c.name), f); !reflect.DeepEqual(got, want) {
				t.Errorf("%s %s %s:\ngot  %v;\nwant the chart's %v", c.kind, c.name, f, got, want)
			}
		}
	}
	for _, name := range []string{"tokenpolicies.tokenwarden.io", "tokenrevocations.tokenwarden.io"} {
		if got, want := find(t, kustomize, "CustomResourceDefinition", name).Object, find(t, chart, "CustomResourceDefinition", name).Object; !reflect.DeepEqual(got, want) {
			t.Errorf("CRD %s differs between config/crd/bases and charts/tokenwarden/crds; want the same (make manifests copies it)", name)
		}
	}
}

func TestTheControllerWritesTheURLTheIssuerServes(t *testing.T) {
	for name, objs := range map[string][]*unstructured.Unstructured{
		"the chart with default values":   renderChart(t, defaultRelease, defaultNamespace, ""),
		"the chart with an external URL":  renderChart(t, defaultRelease, defaultNamespace, "externalURL: https://id.example.com/tokens\n"),
		"the chart with Service port 443": renderChart(t, defaultRelease, defaultNamespace, "issuer: {service: {port: 443}}\n"),
		"the kustomize installation":      renderKustomize(t),
	} {
		t.Run(name, func(t *testing.T) {
			issuerURL := flag(t, find(t, objs, "Deployment", "tokenwarden-controller"), "--issuer-url")
			externalURL := flag(t, find(t, objs, "Deployment", "tokenwarden-issuer"), "--external-url")
			if issuerURL != externalURL || issuerURL == "" {
				t.Errorf("controller --issuer-url %q, issuer --external-url %q; want the same URL", issuerURL, externalURL)
			}
		})
	}
}

// TestTheIssuerReadsThePeerKeyTheControllerKeeps checks that in each installation the issuer's replicas
// read their peer key from the Secret the controller keeps, and listen for and advertise the port their
// container declares.
func TestTheIssuerReadsThePeerKeyTheControllerKeeps(t *testing.T) {
	for name, tc := range map[string]struct {
		objs   []*unstructured.Unstructured
		prefix string
		port   string
	}{
		"the chart with default values": {renderChart(t, defaultRelease, defaultNamespace, ""), "tokenwarden", "8444"},
		"the chart with a peer port":    {renderChart(t, "other", defaultNamespace, "issuer: {peerPort: 7000}\n"), "other-tokenwarden", "7000"},
		"the chart with a full name":    {renderChart(t, defaultRelease, defaultNamespace, "fullnameOverride: tw\n"), "tw", "8444"},
		"the kustomize installation":    {renderKustomize(t), "tokenwarden", "8444"},
	} {
		t.Run(name, func(t *testing.T) {
			controller, issuer := find(t, tc.objs, "Deployment", tc.prefix+"-controller"), find(t, tc.objs, "Deployment", tc.prefix+"-issuer")
			kept, read := flag(t, controller, "--issuer-peer-secret"), flag(t, issuer, "--peer-key-secret")
			if kept != tc.prefix+"-issuer-peer" || read != kept {
				t.Errorf("controller --issuer-peer-secret %q, issuer --peer-key-secret %q; want both %s-issuer-peer", kept, read, tc.prefix)
			}
			var declared string
			for _, p := range container(t, issuer).Ports {
				if p.Name == "peer" {
					declared = fmt.Sprint(p.ContainerPort)
				}
			}
			// The other replicas reach this one at $POD_IP and the port --peer-listen binds.
			if listen := flag(t, issuer, "--peer-listen"); declared != tc.port || listen != ":"+tc.port {
				t.Errorf("container port peer %q, --peer-listen %q; want port %s in both", declared, listen, tc.port)
			}
		})
	}
}

// flag returns the value of --name in the Deployment's container arguments.
func flag(t *testing.T, d *unstructured.Unstructured, name string) string {
	t.Helper()
	for _, arg := range container(t, d).Args {
		if v, ok := strings.CutPrefix(arg, name+"="); ok {
			return v
		}
	}
	t.Errorf("%s: no %s argument in %q", identity(d), name, fmt.Sprint(container(t, d).Args))
	return ""
}

package chart

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestTheChartRefusesBadValuesWithAMessage(t *testing.T) {
	tests := []struct {
		name string
		set  []string // helm --set / --set-string arguments
		want string   // in helm's error
	}{
		{"issuer replicas given as a word", []string{"--set", "issuer.replicas=two"}, "at '/issuer/replicas': got string, want integer"},
		{"no issuer replica at all", []string{"--set", "issuer.replicas=0"}, "at '/issuer/replicas': minimum"},
		{"an unknown top-level key", []string{"--set", "replicas=3"}, "additional properties 'replicas' not allowed"},
		{"an unknown key under issuer", []string{"--set", "issuer.replica=3"}, "at '/issuer': additional properties 'replica' not allowed"},
		{"a misspelt autoscaling key", []string{"--set", "issuer.autoscaling.enable=true"}, "additional properties 'enable' not allowed"},
		{"a pull policy Kubernetes does not know", []string{"--set", "image.pullPolicy=Sometimes"}, "at '/image/pullPolicy'"},
		{"a Service type the issuer cannot use", []string{"--set", "issuer.service.type=ExternalName"}, "at '/issuer/service/type'"},
		{"a Service port above 65535", []string{"--set", "issuer.service.port=70000"}, "at '/issuer/service/port': maximum"},
		{"an external URL with a trailing slash", []string{"--set", "externalURL=https://tokens.example.com/"}, "at '/externalURL'"},
		{"an external URL that is not http(s)", []string{"--set", "externalURL=ftp://tokens.example.com"}, "at '/externalURL'"},
		{"a shard budget above the object size limit", []string{"--set", "shardBudgetBytes=2000000"}, "at '/shardBudgetBytes': maximum"},
		{"a shard budget given as text", []string{"--set-string", "shardBudgetBytes=512Ki"}, "at '/shardBudgetBytes'"},
		{"a CPU target above 100%", []string{"--set", "issuer.autoscaling.targetCPUUtilizationPercentage=150"}, "at '/issuer/autoscaling/targetCPUUtilizationPercentage': maximum"},
		{"an extra argument that is not a string", []string{"--set", "issuer.extraArgs[0]=1"}, "at '/issuer/extraArgs/0'"},
		{"a peer port that is the endpoints' port", []string{"--set", "issuer.peerPort=8443"}, "at '/issuer/peerPort'"},
		{"a peer port above 65535", []string{"--set", "issuer.peerPort=70000"}, "at '/issuer/peerPort': maximum"},
		{"a lease duration without a unit", []string{"--set-string", "issuer.leaseDuration=10"}, "at '/issuer/leaseDuration'"},
		{"a trusted proxy that is not a CIDR", []string{"--set", "issuer.trustedProxies={10.0.0.1}"}, "at '/issuer/trustedProxies/0'"},
		{"a trusted proxy range of every address", []string{"--set", "issuer.trustedProxies={0.0.0.0/0}"}, "at '/issuer/trustedProxies/0'"},
		{"an API server address that is not a CIDR", []string{"--set", "networkPolicy.apiServer.cidrs={10.0.0.1}"}, "at '/networkPolicy/apiServer/cidrs/0'"},
		{"a scrape interval without a unit", []string{"--set", "serviceMonitor.interval=30"}, "at '/serviceMonitor/interval'"},
		{"more minimum than maximum replicas", []string{"--set", "issuer.autoscaling.enabled=true,issuer.autoscaling.minReplicas=5,issuer.autoscaling.maxReplicas=3"},
			"issuer.autoscaling.minReplicas (5) must not exceed issuer.autoscaling.maxReplicas (3)"},
		{"autoscaling with no target", []string{"--set", "issuer.autoscaling.enabled=true,issuer.autoscaling.targetCPUUtilizationPercentage=null"},
			"issuer.autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage"},
		{"a ServiceAccount neither created nor named", []string{"--set", "controller.serviceAccount.create=false"},
			"controller.serviceAccount.name is required when controller.serviceAccount.create is false"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helm(t, append([]string{"template", "bad", chartDir()}, tc.set...)...)
			if err == nil {
				t.Fatalf("helm template %s: got success (%d bytes); want an error saying %q", strings.Join(tc.set, " "), len(out), tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template %s: got %v; want an error saying %q", strings.Join(tc.set, " "), err, tc.want)
			}
		})
	}
}

func TestTheChartAcceptsTheValuesItDocuments(t *testing.T) {
	tests := map[string][]string{
		"a percentage as minAvailable":        {"--set-string", "issuer.podDisruptionBudget.minAvailable=50%"},
		"an external URL with a path":         {"--set", "externalURL=https://example.com/tokens"},
		"an existing ServiceAccount by name":  {"--set", "issuer.serviceAccount.create=false,issuer.serviceAccount.name=issuer"},
		"no preStop hook":                     {"--set", "issuer.preStopSleepSeconds=0"},
		"a peer port and lease of one's own":  {"--set", "issuer.peerPort=9444,issuer.leaseDuration=1m30s"},
		"memory as the only autoscaling goal": {"--set", "issuer.autoscaling.enabled=true,issuer.autoscaling.targetCPUUtilizationPercentage=null,issuer.autoscaling.targetMemoryUtilizationPercentage=70"},
	}
	for name, set := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := helm(t, append([]string{"template", "good", chartDir()}, set...)...); err != nil {
				t.Errorf("helm template %s: got %v; want success", strings.Join(set, " "), err)
			}
		})
	}
}

func TestTheChartReadmeDocumentsEveryValue(t *testing.T) {
	values := readValues(t)
	readme, err := os.ReadFile(filepath.Join(chartDir(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	paths := valuePaths("", values)
	if len(paths) < 40 {
		t.Fatalf("values.yaml: got %d value paths; want the whole tree (%q)", len(paths), paths)
	}
	for _, path := range paths {
		if !strings.Contains(string(readme), "| `"+path+"` |") {
			t.Errorf("charts/tokenwarden/README.md: got no row for `%s`; want one in the values table", path)
		}
	}
}

// freeForm values are Kubernetes objects passed through as they are: documented as a whole.
var freeForm = []string{"resources", "podSecurityContext", "securityContext", "affinity", "nodeSelector",
	"podAnnotations", "podLabels", "annotations", "labels", "namespaceSelector", "podSelector"}

// valuePaths lists the dotted paths of every value, descending into maps that are not free-form.
func valuePaths(prefix string, values map[string]any) []string {
	var paths []string
	for key, v := range values {
		path := strings.TrimPrefix(prefix+"."+key, ".")
		if m, ok := v.(map[string]any); ok && !slices.Contains(freeForm, key) {
			paths = append(paths, valuePaths(path, m)...)
			continue
		}
		paths = append(paths, path)
	}
	slices.Sort(paths)
	return paths
}

func readValues(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	return values
}

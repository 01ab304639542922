package chart

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// everyFeature turns on every optional part of the chart and sets every value away from its default.
const everyFeature = `
fullnameOverride: tw
externalURL: https://tokens.example.com/auth
shardBudgetBytes: 262144
image:
  repository: registry.example.com/tokenwarden
  tag: v0.1.1
  pullPolicy: Always
imagePullSecrets: [{name: regcred}]
controller:
  replicas: 3
  serviceAccount: {create: true, name: tw-ctl, annotations: {example.com/role: controller}}
  resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {cpu: "1", memory: 128Mi}}
  podAnnotations: {example.com/scrape: "true"}
  podLabels: {team: platform}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: platform, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}]
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app.kubernetes.io/component: controller}}}
  priorityClassName: platform-critical
  extraArgs: [--zap-log-level=debug]
issuer:
  replicas: 4
  service: {type: LoadBalancer, port: 443, annotations: {example.com/lb: internal}}
  podDisruptionBudget: {enabled: true, minAvailable: 50%}
  autoscaling: {enabled: true, minReplicas: 3, maxReplicas: 12, targetCPUUtilizationPercentage: 60, targetMemoryUtilizationPercentage: 80}
  tls: {secretName: issuer-tls}
  preStopSleepSeconds: 10
  terminationGracePeriodSeconds: 45
  podAnnotations: {example.com/scrape: "true"}
  podLabels: {team: platform}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Exists}]
  priorityClassName: platform-critical
  peerPort: 9444
  leaseDuration: 15s
  trustedProxies: [10.0.0.0/8, "fd00::/8"]
  extraArgs: [--shutdown-grace=20s]
serviceMonitor:
  enabled: true
  interval: 15s
  scrapeTimeout: 10s
  labels: {release: prometheus}
networkPolicy:
  enabled: true
  ingress:
    namespaceSelector: {matchLabels: {tokenwarden.io/clients: "true"}}
    podSelector: {matchExpressions: [{key: app, operator: Exists}]}
  apiServer:
    cidrs: [10.0.0.1/32, "fd00::1/128"]
    ports: [6443]
`

func TestChartPassesHelmLintStrict(t *testing.T) {
	for name, values := range map[string]string{"with default values": "", "with every optional feature on": everyFeature} {
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir()}
			if values != "" {
				args = append(args, "--values", valuesFile(t, values))
			}
			if out, err := helm(t, args...); err != nil {
				t.Errorf("got %v\n%s; want helm lint --strict to pass", err, out)
			}
		})
	}
}

func TestEveryObjectOfTheChartWithDefaultValuesIsAccepted(t *testing.T) {
	ns := restrictedNamespace(t)
	objs := renderChart(t, defaultRelease, ns, "")

	want := []string{
		"ClusterRole//tokenwarden-controller", "ClusterRole//tokenwarden-issuer",
		"ClusterRole//tokenwarden-revocation-viewer", "ClusterRole//tokenwarden-revoker",
		"ClusterRoleBinding//tokenwarden-controller", "ClusterRoleBinding//tokenwarden-issuer",
		"CustomResourceDefinition//tokenpolicies.tokenwarden.io", "CustomResourceDefinition//tokenrevocations.tokenwarden.io",
		"Deployment/" + ns + "/tokenwarden-controller", "Deployment/" + ns + "/tokenwarden-issuer",
		"PodDisruptionBudget/" + ns + "/tokenwarden-issuer",
		"Role/" + ns + "/tokenwarden-issuer", "Role/" + ns + "/tokenwarden-leader-election", "Role/" + ns + "/tokenwarden-revocation-viewer",
		"RoleBinding/" + ns + "/tokenwarden-issuer", "RoleBinding/" + ns + "/tokenwarden-leader-election",
		"Service/" + ns + "/tokenwarden-issuer",
		"ServiceAccount/" + ns + "/tokenwarden-controller", "ServiceAccount/" + ns + "/tokenwarden-issuer",
	}
	if got := identities(objs); !slices.Equal(got, want) {
		t.Errorf("objects of the default installation:\ngot  %q;\nwant %q", got, want)
	}
	checkCommon(t, objs, ns)
	dryRun(t, objs)

	controller := find(t, objs, "Deployment", "tokenwarden-controller")
	issuer := find(t, objs, "Deployment", "tokenwarden-issuer")
	// TLS by default, from a certificate the controller keeps: the Service's names and the URL's host.
	host := "tokenwarden-issuer." + ns + ".svc"
	url := "https://" + host
	wantArgs := map[*unstructured.Unstructured][]string{
		controller: {"controller", "--issuer-url=" + url, "--issuer-namespace=" + ns, "--leader-elect", "--leader-election-namespace=" + ns,
			"--issuer-tls-secret=tokenwarden-issuer-tls", "--issuer-ca-configmap=tokenwarden-issuer-ca",
			"--issuer-tls-hosts=" + host + ",tokenwarden-issuer,tokenwarden-issuer." + ns + ",tokenwarden-issuer." + ns + ".svc.cluster.local",
			"--issuer-peer-secret=tokenwarden-issuer-peer"},
		issuer: {"issuer", "--external-url=" + url, "--namespace=" + ns, "--listen=:8443", "--metrics-listen=:9090",
			"--peer-listen=:8444", "--peer-key-secret=tokenwarden-issuer-peer", "--lease-duration=10s",
			"--tls-cert-file=/var/run/tokenwarden/tls/tls.crt", "--tls-key-file=/var/run/tokenwarden/tls/tls.key"},
	}
	for d, want := range wantArgs {
		if got := container(t, d).Args; !slices.Equal(got, want) {
			t.Errorf("%s args: got %q; want %q", d.GetName(), got, want)
		}
		if got := replicas(d); got != 2 {
			t.Errorf("%s replicas: got %d; want 2", d.GetName(), got)
		}
		if sc := container(t, d).SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
			t.Errorf("%s container securityContext: got %+v; want runAsUser 65532", d.GetName(), sc)
		}
	}
	if got := container(t, issuer).ReadinessProbe; got == nil || got.HTTPGet == nil || got.HTTPGet.Path != "/readyz" || got.HTTPGet.Port.String() != "https" || got.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Errorf("issuer readiness probe: got %+v; want GET /readyz on port https over HTTPS", got)
	}
	if got := container(t, issuer).LivenessProbe; got == nil || got.HTTPGet == nil || got.HTTPGet.Path != "/healthz" || got.HTTPGet.Port.String() != "https" || got.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Errorf("issuer liveness probe: got %+v; want GET /healthz on port https over HTTPS", got)
	}
	var ports []string
	for _, p := range container(t, issuer).Ports {
		ports = append(ports, fmt.Sprintf("%s:%d", p.Name, p.ContainerPort))
	}
	if want := []string{"https:8443", "metrics:9090", "peer:8444"}; !slices.Equal(ports, want) {
		t.Errorf("issuer container ports: got %q; want %q", ports, want)
	}
	downward := map[string]string{}
	for _, e := range container(t, issuer).Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			downward[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if want := map[string]string{"POD_NAME": "metadata.name", "POD_IP": "status.podIP"}; !maps.Equal(downward, want) {
		t.Errorf("issuer environment from the downward API: got %v; want %v ($POD_IP: where the other replicas reach the peer port)", downward, want)
	}
	if pod := podSpec(t, issuer); len(pod.Volumes) != 1 || pod.Volumes[0].Secret == nil || pod.Volumes[0].Secret.SecretName != "tokenwarden-issuer-tls" {
		t.Errorf("issuer volumes: got %+v; want the controller's TLS Secret tokenwarden-issuer-tls", pod.Volumes)
	}
	svc := &corev1.Service{}
	convert(t, find(t, objs, "Service", "tokenwarden-issuer"), svc)
	if p := svc.Spec.Ports; len(p) != 1 || p[0].Name != "https" || p[0].Port != 443 || p[0].TargetPort.String() != "https" {
		t.Errorf("issuer Service ports: got %+v; want only https, 443 -> https (no metrics, no peer)", p)
	}
	checkPeerPortUnexposed(t, objs)
	if got, _, _ := unstructured.NestedFieldNoCopy(find(t, objs, "PodDisruptionBudget", "tokenwarden-issuer").Object, "spec", "minAvailable"); got != int64(1) {
		t.Errorf("issuer PodDisruptionBudget minAvailable: got %v; want 1", got)
	}
}

func TestEveryObjectOfTheChartWithEveryOptionalFeatureOnIsAccepted(t *testing.T) {
	ns := restrictedNamespace(t)
	objs := renderChart(t, "features", ns, everyFeature)
	priority := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "platform-critical"}, Value: 1000}
	if err := env.Client.Create(context.Background(), priority); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create PriorityClass: %v", err)
	}
	for _, id := range []string{
		"HorizontalPodAutoscaler/" + ns + "/tw-issuer", "ServiceMonitor/" + ns + "/tw",
		"Service/" + ns + "/tw-controller-metrics", "Service/" + ns + "/tw-issuer-metrics", "NetworkPolicy/" + ns + "/tw-issuer",
		"NetworkPolicy/" + ns + "/tw-controller", "PodDisruptionBudget/" + ns + "/tw-issuer",
		"ServiceAccount/" + ns + "/tw-ctl",
	} {
		if !slices.Contains(identities(objs), id) {
			t.Errorf("got objects %q; want %s among them", identities(objs), id)
		}
	}
	checkCommon(t, objs, ns)
	dryRun(t, objs)

	issuer := find(t, objs, "Deployment", "tw-issuer")
	if _, found, _ := unstructured.NestedFieldNoCopy(issuer.Object, "spec", "replicas"); found {
		t.Errorf("issuer Deployment with autoscaling on: got spec.replicas set; want it left to the HorizontalPodAutoscaler")
	}
	wantArgs := map[string][]string{
		"tw-controller": {"controller", "--issuer-url=https://tokens.example.com/auth", "--issuer-namespace=" + ns, "--leader-elect", "--leader-election-namespace=" + ns,
			"--issuer-peer-secret=tw-issuer-peer", "--shard-budget-bytes=262144", "--zap-log-level=debug"},
		"tw-issuer": {"issuer", "--external-url=https://tokens.example.com/auth", "--namespace=" + ns, "--listen=:8443", "--metrics-listen=:9090",
			"--peer-listen=:9444", "--peer-key-secret=tw-issuer-peer", "--lease-duration=15s",
			"--tls-cert-file=/var/run/tokenwarden/tls/tls.crt", "--tls-key-file=/var/run/tokenwarden/tls/tls.key", "--shard-budget-bytes=262144", "--trusted-proxies=10.0.0.0/8,fd00::/8", "--shutdown-grace=20s"},
	}
	for name, want := range wantArgs {
		c := container(t, find(t, objs, "Deployment", name))
		if !slices.Equal(c.Args, want) {
			t.Errorf("%s args: got %q; want %q", name, c.Args, want)
		}
		if c.Image != "registry.example.com/tokenwarden:v0.1.1" || c.ImagePullPolicy != corev1.PullAlways {
			t.Errorf("%s image: got %s (%s); want registry.example.com/tokenwarden:v0.1.1 (Always)", name, c.Image, c.ImagePullPolicy)
		}
	}
	ic := container(t, issuer)
	if len(ic.VolumeMounts) != 1 || ic.VolumeMounts[0].MountPath != "/var/run/tokenwarden/tls" || ic.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Errorf("issuer with TLS: mounts %+v, readiness scheme %q; want the Secret at /var/run/tokenwarden/tls and HTTPS probes", ic.VolumeMounts, ic.ReadinessProbe.HTTPGet.Scheme)
	}
	hpa := find(t, objs, "HorizontalPodAutoscaler", "tw-issuer")
	lo, _, _ := unstructured.NestedInt64(hpa.Object, "spec", "minReplicas")
	hi, _, _ := unstructured.NestedInt64(hpa.Object, "spec", "maxReplicas")
	metrics, _, _ := unstructured.NestedSlice(hpa.Object, "spec", "metrics")
	if lo != 3 || hi != 12 || len(metrics) != 2 {
		t.Errorf("HorizontalPodAutoscaler: got %d..%d replicas on %d metrics; want 3..12 on 2 (cpu, memory)", lo, hi, len(metrics))
	}
	if got := find(t, objs, "ServiceMonitor", "tw").GetLabels()["release"]; got != "prometheus" {
		t.Errorf("ServiceMonitor label release: got %q; want prometheus", got)
	}
	checkPeerPortUnexposed(t, objs)
}

// checkPeerPortUnexposed checks that no Service of an installation forwards to the issuer's peer port: the
// replicas reach each other by pod address, and nothing else has business there.
func checkPeerPortUnexposed(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	var peerPorts []string
	for _, d := range objs {
		if d.GetKind() != "Deployment" {
			continue
		}
		for _, p := range container(t, d).Ports {
			if p.Name == "peer" {
				peerPorts = append(peerPorts, p.Name, strconv.Itoa(int(p.ContainerPort)))
			}
		}
	}
	if len(peerPorts) == 0 {
		t.Fatalf("no container port named peer; want the issuer's")
	}
	for _, o := range objs {
		if o.GetKind() != "Service" {
			continue
		}
		svc := &corev1.Service{}
		convert(t, o, svc)
		for _, p := range svc.Spec.Ports {
			if slices.Contains(peerPorts, p.TargetPort.String()) || slices.Contains(peerPorts, p.Name) {
				t.Errorf("%s exposes port %s -> %s; want the peer port (%s) in no Service", identity(o), p.Name, p.TargetPort.String(), peerPorts)
			}
		}
	}
}

// TestOnlyTheIssuersOwnPodsReachThePeerPort reads the NetworkPolicies: the clients the values name reach
// the issuer's endpoints and metrics as before, but its peer port admits (and its egress reaches) only the
// pods the issuer Deployment selects, those of this release in its namespace.
func TestOnlyTheIssuersOwnPodsReachThePeerPort(t *testing.T) {
	for name, values := range map[string]string{
		"with every optional feature on":            everyFeature,
		"with the network policies and no selector": "fullnameOverride: tw\nnetworkPolicy: {enabled: true}\n",
	} {
		t.Run(name, func(t *testing.T) {
			objs := renderChart(t, "features", defaultNamespace, values)
			issuerPods := &metav1.LabelSelector{}
			sel, _, _ := unstructured.NestedMap(find(t, objs, "Deployment", "tw-issuer").Object, "spec", "selector")
			if err := runtimeConverter.FromUnstructured(sel, issuerPods); err != nil || len(issuerPods.MatchLabels) == 0 {
				t.Fatalf("issuer Deployment selector %v: %v", sel, err)
			}
			isPeer := func(ports []networkingv1.NetworkPolicyPort) bool {
				return slices.ContainsFunc(ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.String() == "peer" })
			}
			onlyIssuerPods := func(peers []networkingv1.NetworkPolicyPeer) bool {
				return len(peers) == 1 && peers[0].NamespaceSelector == nil && peers[0].IPBlock == nil &&
					reflect.DeepEqual(peers[0].PodSelector, issuerPods)
			}

			np := &networkingv1.NetworkPolicy{}
			convert(t, find(t, objs, "NetworkPolicy", "tw-issuer"), np)
			var peerIn, clientsIn int
			for _, rule := range np.Spec.Ingress {
				switch {
				case isPeer(rule.Ports):
					peerIn++
					if len(rule.Ports) != 1 || !onlyIssuerPods(rule.From) {
						t.Errorf("ingress to the peer port: ports %v from %+v; want the peer port alone from the issuer's pods %v", rule.Ports, rule.From, issuerPods.MatchLabels)
					}
				default:
					clientsIn++
					var ports []string
					for _, p := range rule.Ports {
						ports = append(ports, p.Port.String())
					}
					if !slices.Equal(ports, []string{"https", "metrics"}) || len(rule.From) != 1 || rule.From[0].NamespaceSelector == nil {
						t.Errorf("ingress from the clients: ports %q from %+v; want https and metrics from the configured selectors", ports, rule.From)
					}
				}
			}
			if peerIn != 1 || clientsIn != 1 {
				t.Errorf("issuer ingress: %d rules to the peer port, %d to the endpoints; want 1 and 1", peerIn, clientsIn)
			}
			peerOut := 0
			for _, rule := range np.Spec.Egress {
				if isPeer(rule.Ports) {
					peerOut++
					if len(rule.Ports) != 1 || !onlyIssuerPods(rule.To) {
						t.Errorf("egress to the peer port: ports %v to %+v; want the peer port alone to the issuer's pods", rule.Ports, rule.To)
					}
				}
			}
			if peerOut != 1 {
				t.Errorf("issuer egress: %d rules to the peer port; want 1 (the replicas forward to each other)", peerOut)
			}

			controller := &networkingv1.NetworkPolicy{}
			convert(t, find(t, objs, "NetworkPolicy", "tw-controller"), controller)
			for _, rule := range controller.Spec.Ingress {
				if isPeer(rule.Ports) {
					t.Errorf("controller NetworkPolicy: got a peer port rule %+v; want none", rule)
				}
			}
		})
	}
}

// TestTheIssuersCertificateComesFromOneSourceAtATime renders each source of the issuer's certificate: the
// Secret is the one the issuer mounts, and only the self-signed source has the controller keep it.
func TestTheIssuersCertificateComesFromOneSourceAtATime(t *testing.T) {
	tests := map[string]struct {
		values     string
		secret     string // mounted; "" for none (plain HTTP)
		selfSigned bool
		scheme     string
	}{
		"the controller's self-signed one by default": {"", "tw-issuer-tls", true, "https"},
		"a Secret of the user's":                      {"issuer: {tls: {secretName: my-cert}}\n", "my-cert", false, "https"},
		"cert-manager": {"issuer: {tls: {certManager: {issuerRef: {name: corp-ca, kind: ClusterIssuer, group: cert-manager.io}}, extraHosts: [tokens.example.com]}}\n",
			"tw-issuer-tls", false, "https"},
		"none (behind a proxy that terminates TLS)": {"issuer: {tls: {enabled: false}, service: {port: 80}}\n", "", false, "http"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns := restrictedNamespace(t)
			objs := renderChart(t, "tw", ns, "fullnameOverride: tw\n"+tc.values)
			dryRun(t, objs)
			issuer, controller := find(t, objs, "Deployment", "tw-issuer"), find(t, objs, "Deployment", "tw-controller")
			var mounted string
			if vols := podSpec(t, issuer).Volumes; len(vols) == 1 && vols[0].Secret != nil {
				mounted = vols[0].Secret.SecretName
			}
			if mounted != tc.secret {
				t.Errorf("issuer mounts %q; want %q", mounted, tc.secret)
			}
			kept := slices.ContainsFunc(container(t, controller).Args, func(a string) bool { return strings.HasPrefix(a, "--issuer-tls-secret=") })
			if kept != tc.selfSigned {
				t.Errorf("controller keeps a self-signed certificate: %v; want %v", kept, tc.selfSigned)
			}
			if url := flag(t, issuer, "--external-url"); !strings.HasPrefix(url, tc.scheme+"://tw-issuer."+ns+".svc") || strings.Contains(url, ":443") || strings.Contains(url, ":80") {
				t.Errorf("external URL %q; want %s:// with the scheme's own port left out", url, tc.scheme)
			}
			certs := 0
			for _, o := range objs {
				if o.GetKind() != "Certificate" {
					continue
				}
				certs++
				names, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "dnsNames")
				secret, _, _ := unstructured.NestedString(o.Object, "spec", "secretName")
				if secret != "tw-issuer-tls" || !slices.Contains(names, "tw-issuer."+ns+".svc") || !slices.Contains(names, "tokens.example.com") {
					t.Errorf("Certificate: secret %s, names %q; want tw-issuer-tls for the Service's names and the extra host", secret, names)
				}
			}
			if want := map[bool]int{true: 1, false: 0}[strings.Contains(name, "cert-manager")]; certs != want {
				t.Errorf("%d Certificates; want %d", certs, want)
			}
		})
	}
}

func TestTheChartWithNoOptionalFeatureRendersNone(t *testing.T) {
	objs := renderChart(t, "plain", "plain", "issuer: {replicas: 1}\n")
	for _, kind := range []string{"HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget"} {
		for _, o := range objs {
			if o.GetKind() == kind {
				t.Errorf("one issuer replica, optional features off: got %s; want none", identity(o))
			}
		}
	}
}

func TestEveryObjectOfTheKustomizeInstallationIsAccepted(t *testing.T) {
	objs := renderKustomize(t)
	ns := find(t, objs, "Namespace", defaultNamespace)
	if got := ns.GetLabels()["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("Namespace %s: got Pod Security level %q; want restricted", defaultNamespace, got)
	}
	checkCommon(t, objs, defaultNamespace)
	dryRun(t, objs)
	checkPeerPortUnexposed(t, objs)
}

// checkCommon checks what holds for every object of an installation: namespaced objects name the
// installation's namespace (so that kubectl apply puts them there), and every pod runs as non-root with
// a read-only root file system, no privilege escalation, no capabilities and the runtime's seccomp profile.
func checkCommon(t *testing.T, objs []*unstructured.Unstructured, namespace string) {
	t.Helper()
	clusterScoped := []string{"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}
	for _, o := range objs {
		if slices.Contains(clusterScoped, o.GetKind()) {
			if o.GetNamespace() != "" {
				t.Errorf("%s: got namespace %q; want none", identity(o), o.GetNamespace())
			}
			continue
		}
		if o.GetNamespace() != namespace {
			t.Errorf("%s: got namespace %q; want %q", identity(o), o.GetNamespace(), namespace)
		}
		if o.GetKind() == "Deployment" {
			checkPodSecurity(t, o)
		}
	}
}

func checkPodSecurity(t *testing.T, d *unstructured.Unstructured) {
	t.Helper()
	spec := podSpec(t, d)
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s pod securityContext: got %+v; want runAsNonRoot and seccompProfile RuntimeDefault", d.GetName(), psc)
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		var problems []string
		switch {
		case sc == nil:
			problems = append(problems, "none")
		default:
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				problems = append(problems, "privilege escalation allowed")
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				problems = append(problems, "root file system writable")
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
				problems = append(problems, "capabilities not all dropped")
			}
			if uid := sc.RunAsUser; uid != nil && *uid != 65532 || psc != nil && psc.RunAsUser != nil && *psc.RunAsUser != 65532 {
				problems = append(problems, "a user other than the image's 65532")
			}
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			problems = append(problems, fmt.Sprintf("resources %v", c.Resources))
		}
		if len(problems) > 0 {
			t.Errorf("%s container %s: got %s; want the restricted pod security settings, CPU and memory requests and a memory limit",
				d.GetName(), c.Name, strings.Join(problems, ", "))
		}
	}
}

// convert turns an unstructured object into a typed one.
func convert(t *testing.T, o *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtimeConverter.FromUnstructuredWithValidation(o.Object, into, true); err != nil {
		t.Fatalf("convert %s: %v", identity(o), err)
	}
}

func podSpec(t *testing.T, d *unstructured.Unstructured) corev1.PodSpec {
	t.Helper()
	tmpl, found, err := unstructured.NestedMap(d.Object, "spec", "template", "spec")
	if !found || err != nil {
		t.Fatalf("%s: no pod template spec (%v)", identity(d), err)
	}
	var spec corev1.PodSpec
	if err := runtimeConverter.FromUnstructuredWithValidation(tmpl, &spec, true); err != nil {
		t.Fatalf("%s pod template: %v", identity(d), err)
	}
	return spec
}

func container(t *testing.T, d *unstructured.Unstructured) corev1.Container {
	t.Helper()
	spec := podSpec(t, d)
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: got %d containers; want 1", identity(d), len(spec.Containers))
	}
	return spec.Containers[0]
}

func replicas(d *unstructured.Unstructured) int64 {
	n, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas")
	return n
}

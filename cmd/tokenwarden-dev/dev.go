package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/cmd/internal/subcommand"
	"github.com/tokenwarden/tokenwarden/controllers"
	"github.com/tokenwarden/tokenwarden/internal/kube"
	"github.com/tokenwarden/tokenwarden/issuer"
	"github.com/tokenwarden/tokenwarden/issuer/app"
)

// devNamespace is the issuer's namespace in the dev mode.
const devNamespace = "tokenwarden-system"

// DevConfig is the all-in-one development mode: a local control plane, the CRDs, the controller, the
// issuer and the samples, in one process.
type DevConfig struct {
	Assets     string // KUBEBUILDER_ASSETS: kube-apiserver and etcd
	DataDir    string
	Clean      bool
	CRDDir     string
	SamplesDir string
	Listen     string
	Zap        zap.Options
	out        io.Writer
}

func devFlags(fs *flag.FlagSet) subcommand.Runner {
	c := &DevConfig{out: os.Stdout}
	fs.StringVar(&c.Assets, "control-plane", os.Getenv("KUBEBUILDER_ASSETS"), "folder with kube-apiserver and etcd (make run passes the one hack/control-plane.sh builds); default $KUBEBUILDER_ASSETS")
	fs.StringVar(&c.DataDir, "data-dir", ".dev", "folder for etcd's data and the kubeconfig; reused by the next run unless --clean")
	fs.BoolVar(&c.Clean, "clean", false, "start from an empty data folder")
	fs.StringVar(&c.CRDDir, "crd-dir", "config/crd/bases", "folder of the CRDs to install")
	fs.StringVar(&c.SamplesDir, "samples", "config/samples", "folder of YAML to apply once the controller runs (empty: none)")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8443", "address the issuer listens on (loopback)")
	c.Zap.BindFlags(fs)
	return c
}

// Validate checks the configuration before anything starts.
func (c *DevConfig) Validate() error {
	var errs []error
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(c.Assets, bin)); c.Assets == "" || err != nil {
			errs = append(errs, fmt.Errorf("no %s in --control-plane %q: run 'make run', which builds the control plane once and passes it", bin, c.Assets))
		}
	}
	if _, err := os.Stat(c.CRDDir); err != nil {
		errs = append(errs, fmt.Errorf("--crd-dir: %w (run from the repository root)", err))
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		errs = append(errs, fmt.Errorf("--listen %q: the dev mode serves on a loopback address only", c.Listen))
	}
	return errors.Join(errs...)
}

// Run starts everything, prints how to use it, and stops everything when ctx ends.
func (c *DevConfig) Run(ctx context.Context) error {
	logger := zap.New(zap.UseFlagOptions(&c.Zap), zap.WriteTo(os.Stderr))
	setLogger(logger)
	if c.Clean {
		if err := os.RemoveAll(c.DataDir); err != nil {
			return err
		}
	}
	etcdDir, err := filepath.Abs(filepath.Join(c.DataDir, "etcd"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(etcdDir, 0o700); err != nil {
		return err
	}
	reused := dirHasFiles(etcdDir)
	fmt.Fprintf(c.out, "Starting kube-apiserver and etcd (data in %s%s)...\n", etcdDir, map[bool]string{true: ", reused", false: ""}[reused])
	env := &envtest.Environment{
		BinaryAssetsDirectory: c.Assets,
		CRDDirectoryPaths:     []string{c.CRDDir},
		ErrorIfCRDPathMissing: true,
	}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: etcdDir}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	defer func() {
		fmt.Fprintln(c.out, "Stopping the control plane...")
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop control plane:", err)
		}
	}()
	kubeconfig, err := c.writeKubeconfig(env)
	if err != nil {
		return err
	}
	cl, err := client.New(cfg, client.Options{Scheme: kube.Scheme()})
	if err != nil {
		return err
	}

	// The issuer runs in a namespace of its own, as the chart installs it: the controller materialises there
	// what it serves.
	if err := createIfMissing(ctx, cl, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: devNamespace}}); err != nil {
		return fmt.Errorf("create namespace %s: %w", devNamespace, err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	issuerURL := "http://" + c.Listen
	errs := make(chan error, 2)
	go func() { errs <- runController(ctx, cfg, logger, issuerURL) }()
	go func() { errs <- c.runIssuer(ctx, cfg, logger, issuerURL) }()
	if err := c.applySamples(ctx, cl); err != nil {
		return err
	}
	if err := c.waitReady(ctx, cl, issuerURL); err != nil {
		cancel()
		return errors.Join(err, <-errs)
	}
	c.printWelcome(ctx, cl, kubeconfig, issuerURL)

	select {
	case <-ctx.Done():
		fmt.Fprintln(c.out, "\nStopping the issuer and the controller...")
		cancel()
		for range 2 {
			if err := <-errs; err != nil && !errors.Is(err, context.Canceled) {
				fmt.Fprintln(os.Stderr, err)
			}
		}
		return nil
	case err := <-errs:
		cancel()
		return err
	}
}

// runController runs the reconcilers in this process, as 'tokenwarden controller' runs them, with no leader
// election and neither metrics nor probe endpoints.
func runController(ctx context.Context, cfg *rest.Config, logger logr.Logger, issuerURL string) error {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: kube.Scheme(), Logger: logger.WithName("controller"), Cache: controllers.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := controllers.Setup(mgr, controllers.Options{IssuerURL: issuerURL, IssuerNamespace: devNamespace,
		ShardBudget: controllers.DefaultShardBudget, ShardStatusPeriod: 10 * time.Second}); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// runIssuer serves the token endpoints in this process, as 'tokenwarden issuer' serves them with its default
// flags, on c.Listen and without a metrics endpoint.
func (c *DevConfig) runIssuer(ctx context.Context, cfg *rest.Config, logger logr.Logger, issuerURL string) error {
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Listen, err)
	}
	return app.Run(ctx, cfg, app.Options{ExternalURL: issuerURL, Namespace: devNamespace, Listener: ln, Logger: logger.WithName("issuer"),
		// The dev mode serves on loopback only, where a policy may turn the refresh cookie's Secure off.
		ServerOptions: func(sc *issuer.ServerConfig) { sc.InsecureCookies = true }})
}

// setLogger makes logger the logger of controller-runtime and klog, so that every line has one format.
func setLogger(logger logr.Logger) {
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
}

func dirHasFiles(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) > 0
}

func (c *DevConfig) writeKubeconfig(env *envtest.Environment) (string, error) {
	user, err := env.AddUser(envtest.User{Name: "dev-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("create a kubeconfig user: %w", err)
	}
	b, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path, err := filepath.Abs(filepath.Join(c.DataDir, "kubeconfig"))
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, b, 0o600)
}

// applySamples creates every object of the sample YAML files that does not exist yet. It also creates the
// ServiceAccounts the sample policy names, which a real cluster has and a bare control plane lacks.
func (c *DevConfig) applySamples(ctx context.Context, cl client.Client) error {
	if c.SamplesDir == "" {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(c.SamplesDir, "*.yaml"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := dec.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			obj := &unstructured.Unstructured{}
			if err := utilyaml.Unmarshal(doc, &obj.Object); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			if err := createIfMissing(ctx, cl, obj); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if obj.GetKind() == "TokenPolicy" {
				if err := c.createServiceAccounts(ctx, cl, obj); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func createIfMissing(ctx context.Context, cl client.Client, obj client.Object) error {
	err := cl.Create(ctx, obj)
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func (c *DevConfig) createServiceAccounts(ctx context.Context, cl client.Client, u *unstructured.Unstructured) error {
	p := &v1alpha1.TokenPolicy{}
	if err := runtimeConvert(u, p); err != nil {
		return err
	}
	refs := append(append([]v1alpha1.ServiceAccountRef(nil), p.Spec.Login.ServiceAccounts...), p.Spec.Introspection.ServiceAccounts...)
	for _, ref := range refs {
		if ref.Name == "*" {
			continue
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name}}
		if err := createIfMissing(ctx, cl, sa); err != nil {
			return fmt.Errorf("create ServiceAccount %s/%s: %w", ref.Namespace, ref.Name, err)
		}
	}
	return nil
}

// waitReady waits until every TokenPolicy is Ready and the issuer serves it as such: discovery answers,
// and lists the password grant when the policy has users (the issuer sees what the controller
// materialised a watch's latency after the policy turns Ready).
func (c *DevConfig) waitReady(ctx context.Context, cl client.Client, base string) error {
	fmt.Fprintln(c.out, "Waiting for the TokenPolicies to be ready...")
	var why string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var list v1alpha1.TokenPolicyList
		if err := cl.List(ctx, &list); err != nil {
			why = err.Error()
			return false, nil
		}
		for _, p := range list.Items {
			if !meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.ConditionReady) {
				why = "TokenPolicy " + p.Namespace + "/" + p.Name + " is not Ready yet"
				return false, nil
			}
			if why = served(ctx, &p, base); why != "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for readiness: %s: %w", why, err)
	}
	return nil
}

// served says why the issuer at base does not serve p as its spec says yet, or "".
func served(ctx context.Context, p *v1alpha1.TokenPolicy, base string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.IssuerURL(base)+"/.well-known/openid-configuration", nil)
	if err != nil {
		return err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var doc struct {
		Grants []string `json:"grant_types_supported"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&doc) != nil {
		return fmt.Sprintf("the issuer does not serve %s/%s yet (%s)", p.Namespace, p.Name, resp.Status)
	}
	if p.UsersSecretName() != "" && !slices.Contains(doc.Grants, "password") {
		return fmt.Sprintf("the issuer has not loaded the users of %s/%s yet", p.Namespace, p.Name)
	}
	return ""
}

func (c *DevConfig) printWelcome(ctx context.Context, cl client.Client, kubeconfig, base string) {
	var list v1alpha1.TokenPolicyList
	_ = cl.List(ctx, &list)
	var b strings.Builder
	fmt.Fprintf(&b, "\ntokenwarden is running.\n\n  issuer:      %s  (plain HTTP, on loopback only; the chart serves TLS)\n  kubeconfig:  %s\n", base, kubeconfig)
	for _, p := range list.Items {
		fmt.Fprintf(&b, "  policy:      %s/%s  ->  %s\n", p.Namespace, p.Name, p.Status.IssuerURL)
	}
	if len(list.Items) > 0 {
		p := list.Items[0]
		iss := p.Status.IssuerURL
		fmt.Fprintf(&b, `
Try it (in another terminal):

  export KUBECONFIG=%[1]s ISS=%[2]s
  kubectl get tokenpolicies -A

  # log in (password grant; the sample user is alice / wonderland)
  curl -s -d grant_type=password -d username=alice -d password=wonderland $ISS/token | tee /tmp/tw.json
  RT=$(sed -n 's/.*"refresh_token":"\([^"]*\)".*/\1/p' /tmp/tw.json)
  AT=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' /tmp/tw.json)

  # refresh: the refresh token rotates, so keep the new one (presenting the old one again revokes the session)
  curl -s -d grant_type=refresh_token -d refresh_token=$RT $ISS/token | tee /tmp/tw.json
  RT=$(sed -n 's/.*"refresh_token":"\([^"]*\)".*/\1/p' /tmp/tw.json)

  # introspect, as the ServiceAccount the policy allows
  curl -s -H "Authorization: Bearer $(kubectl create token payments-api --audience $ISS)" -d token=$AT $ISS/introspect

  # revoke the session (RFC 7009); from now on its refresh token gets invalid_grant
  curl -s -d token=$RT $ISS/revoke
  curl -s -d grant_type=refresh_token -d refresh_token=$RT $ISS/token

  # discovery and keys
  curl -s $ISS/.well-known/openid-configuration
  curl -s $ISS/jwks.json

  # browser apps: uncomment spec.browser in config/samples/tokenpolicy.yaml and kubectl apply -f it; /login then sets an HttpOnly refresh cookie for the listed origins

Press Ctrl-C to stop everything.
`, kubeconfig, iss)
	}
	fmt.Fprint(c.out, b.String())
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenwarden/tokenwarden/controllers"
	"github.com/tokenwarden/tokenwarden/internal/kube"
)

// ControllerConfig is the controller's configuration.
type ControllerConfig struct {
	IssuerURL        string
	IssuerNamespace  string
	IssuerTLSSecret  string
	IssuerCAConfig   string
	IssuerTLSHosts   string
	IssuerPeerSecret string
	MetricsAddr      string
	ProbeAddr        string
	LeaderElection   bool
	LeaderElectionNS string
	ShardBudget      int
	ShardStatus      time.Duration
	Zap              zap.Options
}

func controllerFlags(fs *flag.FlagSet) runner {
	c := &ControllerConfig{}
	fs.StringVar(&c.IssuerURL, "issuer-url", "", "external base URL of the issuer; a policy is served at <issuer-url>/<namespace>/<name> (required)")
	fs.StringVar(&c.IssuerNamespace, "issuer-namespace", podNamespace(), "the issuer's namespace, where the controller materialises each policy's keys, users and revocation objects for it (default: the controller's own)")
	fs.StringVar(&c.IssuerTLSSecret, "issuer-tls-secret", "", "keep the issuer's self-signed serving certificate in this Secret of the issuer's namespace (its CA in <name>-ca, which only the controller reads); empty: the issuer's certificate comes from elsewhere")
	fs.StringVar(&c.IssuerCAConfig, "issuer-ca-configmap", "", "publish the self-signed CA's certificate (ca.crt) in this ConfigMap of the issuer's namespace, for clients to trust")
	fs.StringVar(&c.IssuerTLSHosts, "issuer-tls-hosts", "", "comma-separated DNS names of the self-signed certificate (the issuer Service's names, the external URL's host)")
	fs.StringVar(&c.IssuerPeerSecret, "issuer-peer-secret", "tokenwarden-issuer-peer", "keep the issuer replicas' peer key (HMAC of the peer port) in this Secret of the issuer's namespace; empty: none (the replicas then do not forward to each other)")
	fs.StringVar(&c.MetricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 turns it off")
	fs.StringVar(&c.ProbeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&c.LeaderElection, "leader-elect", true, "elect a leader so that only one replica reconciles")
	fs.StringVar(&c.LeaderElectionNS, "leader-election-namespace", "", "namespace of the leader-election Lease; default: the pod's namespace")
	fs.IntVar(&c.ShardBudget, "shard-budget-bytes", controllers.DefaultShardBudget, "byte budget of one revocation shard")
	fs.DurationVar(&c.ShardStatus, "shard-status-period", 10*time.Second, "how often each policy's shard fill is read into its status (and RevocationStoreReady decided)")
	c.Zap.BindFlags(fs)
	return c
}

// Validate checks the configuration before anything starts.
func (c *ControllerConfig) Validate() error {
	var errs []error
	if u, err := url.Parse(c.IssuerURL); c.IssuerURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--issuer-url must be an absolute http(s) URL, got %q", c.IssuerURL))
	}
	if err := validNamespace("issuer-namespace", c.IssuerNamespace); err != nil {
		errs = append(errs, err)
	}
	if c.IssuerTLSSecret != "" && (c.IssuerCAConfig == "" || c.IssuerTLSHosts == "") {
		errs = append(errs, errors.New("--issuer-tls-secret needs --issuer-ca-configmap and --issuer-tls-hosts"))
	}
	if bad := validation.IsDNS1123Subdomain(c.IssuerPeerSecret); c.IssuerPeerSecret != "" && len(bad) > 0 {
		errs = append(errs, fmt.Errorf("--issuer-peer-secret must name a Secret (a DNS-1123 subdomain) or be empty, got %q: %s", c.IssuerPeerSecret, strings.Join(bad, "; ")))
	}
	if c.ShardBudget < 4<<10 || c.ShardBudget > 900<<10 {
		errs = append(errs, fmt.Errorf("--shard-budget-bytes must be between 4096 and 921600 (objects are limited to 1 MiB), got %d", c.ShardBudget))
	}
	if c.ShardStatus < time.Second && c.ShardStatus != 0 {
		errs = append(errs, fmt.Errorf("--shard-status-period %s: want 0 (only on change) or at least 1s", c.ShardStatus))
	}
	return errors.Join(errs...)
}

// Run runs the controller until ctx ends.
func (c *ControllerConfig) Run(ctx context.Context) error { return withCluster(ctx, &c.Zap, c.run) }

func (c *ControllerConfig) run(ctx context.Context, cfg *rest.Config, logger logr.Logger) error {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  kube.Scheme(),
		Logger:                  logger.WithName("controller"),
		Cache:                   controllers.CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: c.MetricsAddr},
		HealthProbeBindAddress:  c.ProbeAddr,
		LeaderElection:          c.LeaderElection,
		LeaderElectionID:        "tokenwarden-controller",
		LeaderElectionNamespace: c.LeaderElectionNS,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := controllers.Setup(mgr, controllers.Options{IssuerURL: c.IssuerURL, IssuerNamespace: c.IssuerNamespace, ShardBudget: c.ShardBudget, ShardStatusPeriod: c.ShardStatus,
		IssuerTLS: controllers.IssuerTLS{SecretName: c.IssuerTLSSecret, CAConfigMap: c.IssuerCAConfig, Hosts: splitList(c.IssuerTLSHosts)}, IssuerPeerSecret: c.IssuerPeerSecret}); err != nil {
		return err
	}
	if c.ProbeAddr != "0" {
		if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
			return err
		}
	}
	return mgr.Start(ctx)
}

// withCluster sets up logging from the flags and runs run with the kubeconfig or in-cluster credentials.
func withCluster(ctx context.Context, opts *zap.Options, run func(context.Context, *rest.Config, logr.Logger) error) error {
	logger := zap.New(zap.UseFlagOptions(opts))
	setLogger(logger)
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	return run(ctx, cfg, logger)
}

// setLogger makes logger the logger of controller-runtime and klog, so that every line has one format.
func setLogger(logger logr.Logger) {
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

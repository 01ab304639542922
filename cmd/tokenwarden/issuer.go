package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
	"github.com/tokenwarden/tokenwarden/issuer"
	"github.com/tokenwarden/tokenwarden/issuer/app"
	"github.com/tokenwarden/tokenwarden/issuer/peer"
)

// IssuerConfig is the issuer's configuration.
type IssuerConfig struct {
	ExternalURL   string
	Namespace     string
	Listen        string
	MetricsListen string
	ShardBudget   int
	WriteTimeout  time.Duration
	ShutdownGrace time.Duration
	IPRate        issuer.RateLimit
	UsernameRate  issuer.RateLimit
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies issuer.Prefixes
	Pprof          bool
	Linger         time.Duration
	TLSCertFile    string
	TLSKeyFile     string
	// PeerListen, PeerAdvertise, PeerKeySecret and LeaseDuration configure journal ownership (app.Peers);
	// PeerListen "0" turns it off.
	PeerListen    string
	PeerAdvertise string
	PeerKeySecret string
	LeaseDuration time.Duration
	Zap           zap.Options
}

func issuerFlags(fs *flag.FlagSet) runner {
	c := (&IssuerConfig{}).withDefaults()
	fs.StringVar(&c.ExternalURL, "external-url", "", "URL clients reach the issuer at; policy namespace/name is served at <external-url>/<namespace>/<name> (required)")
	fs.StringVar(&c.Namespace, "namespace", podNamespace(), "the issuer's namespace: the only one whose Secrets and ConfigMaps it reads and writes (default: the pod's own)")
	fs.StringVar(&c.Listen, "listen", c.Listen, "address to serve the token endpoints on")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "address to serve /metrics (and --pprof) on, apart from the endpoints; 0 turns it off")
	fs.IntVar(&c.ShardBudget, "shard-budget-bytes", c.ShardBudget, "byte budget of one revocation shard: new records beyond it are refused with 503")
	fs.DurationVar(&c.WriteTimeout, "store-write-timeout", c.WriteTimeout, "bound on one revocation-store commit, conflicts included")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "how long in-flight requests may finish after SIGTERM")
	fs.DurationVar(&c.Linger, "store-linger", 2*time.Millisecond, "under load, how long a policy's journal writer gathers more operations before it writes (fewer, larger writes; that much more latency)")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", "", "serve HTTPS with this certificate (PEM), re-read when it changes; e.g. tls.crt of a mounted cert-manager Secret")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", "", "the private key of --tls-cert-file (PEM)")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on the metrics address (profiling only)")
	fs.Float64Var(&c.IPRate.PerSecond, "password-rate-per-client", issuer.DefaultIPRate.PerSecond, "failed attempts per second per client address, after the burst (wrong passwords, refused ServiceAccount tokens of token exchange and introspection callers; successful attempts cost nothing); per replica")
	fs.IntVar(&c.IPRate.Burst, "password-burst-per-client", issuer.DefaultIPRate.Burst, "failed attempts per client address at once; per replica")
	fs.Float64Var(&c.UsernameRate.PerSecond, "password-rate-per-user", issuer.DefaultUsernameRate.PerSecond, "wrong passwords per second per username of a users Secret, after the burst; per replica")
	fs.IntVar(&c.UsernameRate.Burst, "password-burst-per-user", issuer.DefaultUsernameRate.Burst, "wrong passwords per username at once; per replica")
	fs.Var(&c.TrustedProxies, "trusted-proxies", "comma-separated CIDRs of proxies (an ingress, a load balancer) whose X-Forwarded-For is believed: the client is the rightmost address in it that is not a trusted proxy; empty: the connection's peer")
	fs.StringVar(&c.PeerListen, "peer-listen", c.PeerListen, "address of the peer port, where the replica owning a revocation journal takes the other replicas' decisions for it (authenticated; not for the Service); 0: no ownership, every replica writes every journal")
	fs.StringVar(&c.PeerAdvertise, "peer-advertise", "", "host:port the other replicas reach the peer port at, unique per replica (e.g. $(POD_IP):8444); default: the pod's IP ($POD_IP) and the --peer-listen port")
	fs.StringVar(&c.PeerKeySecret, "peer-key-secret", c.PeerKeySecret, "Secret of the issuer's namespace with the replicas' shared peer key (data key \"key\"; the controller's --issuer-peer-secret keeps it)")
	fs.DurationVar(&c.LeaseDuration, "lease-duration", c.LeaseDuration, "how long a journal owner's Lease stands unrenewed: the longest a dead owner's journal answers 503; the same on every replica")
	c.Zap.BindFlags(fs)
	return c
}

func (c *IssuerConfig) withDefaults() *IssuerConfig {
	if c.Listen == "" {
		c.Listen = ":8443"
	}
	if c.MetricsListen == "" {
		c.MetricsListen = ":9090"
	}
	if c.ShardBudget == 0 {
		c.ShardBudget = configmap.DefaultBudget
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = configmap.DefaultWriteTimeout
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.PeerListen == "" {
		c.PeerListen = ":8444"
	}
	if c.PeerKeySecret == "" {
		c.PeerKeySecret = "tokenwarden-issuer-peer"
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = peer.DefaultLeaseDuration
	}
	return c
}

// Validate checks the configuration before anything starts.
func (c *IssuerConfig) Validate() error {
	var errs []error
	if u, err := url.Parse(c.ExternalURL); c.ExternalURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--external-url must be an absolute http(s) URL, got %q", c.ExternalURL))
	}
	if err := validNamespace("namespace", c.Namespace); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: %w", c.Listen, err))
	}
	if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil && c.MetricsListen != "0" {
		errs = append(errs, fmt.Errorf("--metrics-listen %q: %w", c.MetricsListen, err))
	}
	if c.Pprof && c.MetricsListen == "0" {
		errs = append(errs, errors.New("--pprof is served on the metrics address: it needs --metrics-listen"))
	}
	if c.ShardBudget < 4<<10 || c.ShardBudget > 900<<10 {
		errs = append(errs, fmt.Errorf("--shard-budget-bytes must be between 4096 and 921600, got %d", c.ShardBudget))
	}
	for _, l := range []issuer.RateLimit{c.IPRate, c.UsernameRate} {
		if l != (issuer.RateLimit{}) && (l.PerSecond <= 0 || l.Burst < 1) {
			errs = append(errs, fmt.Errorf("password rate limits need a positive rate and a burst of at least 1, got %+v", l))
		}
	}
	for _, p := range c.TrustedProxies {
		if p.Bits() == 0 {
			errs = append(errs, fmt.Errorf("--trusted-proxies %s trusts every address: X-Forwarded-For would be the client's to choose", p))
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together"))
	}
	if c.Linger < 0 || c.Linger > 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--store-linger %s: want 0 to 100ms", c.Linger))
	}
	if c.PeerListen != "0" {
		if _, _, err := net.SplitHostPort(c.PeerListen); err != nil {
			errs = append(errs, fmt.Errorf("--peer-listen %q: %w", c.PeerListen, err))
		}
		if c.PeerKeySecret == "" {
			errs = append(errs, errors.New("--peer-listen needs --peer-key-secret"))
		}
		if c.LeaseDuration < 2*time.Second || c.LeaseDuration > 5*time.Minute {
			errs = append(errs, fmt.Errorf("--lease-duration %s: want 2s to 5m", c.LeaseDuration))
		}
		if c.LeaseDuration%time.Second != 0 {
			errs = append(errs, fmt.Errorf("--lease-duration %s: a Lease counts whole seconds", c.LeaseDuration))
		}
		if c.PeerAdvertise != "" {
			if host, port, err := net.SplitHostPort(c.PeerAdvertise); err != nil || host == "" || port == "" || port == "0" {
				errs = append(errs, fmt.Errorf("--peer-advertise %q: want host:port", c.PeerAdvertise))
			}
		}
	}
	if c.WriteTimeout <= 0 || c.ShutdownGrace < 0 {
		errs = append(errs, errors.New("--store-write-timeout must be positive and --shutdown-grace not negative"))
	}
	return errors.Join(errs...)
}

// Run serves until ctx ends.
func (c *IssuerConfig) Run(ctx context.Context) error { return withCluster(ctx, &c.Zap, c.run) }

func (c *IssuerConfig) run(ctx context.Context, cfg *rest.Config, logger logr.Logger) error {
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Listen, err)
	}
	var metrics net.Listener
	if c.MetricsListen != "0" {
		if metrics, err = net.Listen("tcp", c.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s: %w", c.MetricsListen, err)
		}
	}
	var peers *app.Peers
	if c.PeerListen != "0" {
		pl, err := net.Listen("tcp", c.PeerListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s: %w", c.PeerListen, err)
		}
		advertise, err := c.advertise(pl.Addr())
		if err != nil {
			ln.Close()
			pl.Close()
			return err
		}
		peers = &app.Peers{Listener: pl, Advertise: advertise, KeySecret: c.PeerKeySecret, LeaseDuration: c.LeaseDuration}
	}
	return app.Run(ctx, cfg, app.Options{Peers: peers, ExternalURL: c.ExternalURL, Namespace: c.Namespace, Listener: ln, MetricsListener: metrics, ShardBudget: c.ShardBudget,
		WriteTimeout: c.WriteTimeout, ShutdownGrace: c.ShutdownGrace, IPRate: c.IPRate, UsernameRate: c.UsernameRate, TrustedProxies: c.TrustedProxies, Pprof: c.Pprof, Linger: c.Linger, TLSCertFile: c.TLSCertFile, TLSKeyFile: c.TLSKeyFile,
		Logger: logger.WithName("issuer")})
}

// advertise is where the other replicas reach this one's peer port, bound at bound: --peer-advertise; or
// the address bound, when --peer-listen names a host; or $POD_IP with the port bound.
func (c *IssuerConfig) advertise(bound net.Addr) (string, error) {
	if c.PeerAdvertise != "" {
		return c.PeerAdvertise, nil
	}
	host, _, _ := net.SplitHostPort(c.PeerListen)
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return bound.String(), nil
	}
	_, port, _ := net.SplitHostPort(bound.String())
	if ip := os.Getenv("POD_IP"); ip != "" {
		return net.JoinHostPort(ip, port), nil
	}
	return "", errors.New("--peer-advertise is needed where $POD_IP is not set: the other replicas must know where to reach this replica's peer port (or --peer-listen=0 for a single replica that forwards nothing)")
}

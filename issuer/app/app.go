package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/kube"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
	"github.com/tokenwarden/tokenwarden/issuer"
	"github.com/tokenwarden/tokenwarden/issuer/peer"
	"github.com/tokenwarden/tokenwarden/issuer/policies"
)

// Options configure one replica.
type Options struct {
	// ExternalURL is where clients reach the issuer; every replica of one issuer has the same.
	ExternalURL string
	// Namespace is the issuer's own, where the controller materialises what it serves: the only namespace
	// whose Secrets and ConfigMaps the replica reads and writes.
	Namespace string
	// Listener is where the replica serves its endpoints.
	Listener net.Listener
	// MetricsListener, if set, is where the replica serves /metrics (and pprof): never the endpoints'
	// listener, which faces every app.
	MetricsListener net.Listener
	// ShardBudget and WriteTimeout configure the revocation store; zero means its defaults.
	ShardBudget  int
	WriteTimeout time.Duration
	// Linger is how long a policy's journal writer gathers operations under load before it writes; 0: none.
	Linger time.Duration
	// ShutdownGrace is how long in-flight requests may finish once ctx ends.
	ShutdownGrace time.Duration
	// Clock is the time tokens are issued and checked at; nil means the real clock.
	Clock clock.PassiveClock
	// Logger receives the replica's logs.
	Logger logr.Logger
	// IPRate and UsernameRate limit failed attempts per client address and per username; zero means the
	// server's defaults.
	IPRate, UsernameRate issuer.RateLimit
	// TrustedProxies are the peers whose X-Forwarded-For names the client (issuer.ServerConfig).
	TrustedProxies issuer.Prefixes
	// TLSCertFile and TLSKeyFile, when set, make the replica serve HTTPS with that pair, re-read when the
	// files change (a mounted kubernetes.io/tls Secret, as cert-manager renews it).
	TLSCertFile, TLSKeyFile string
	// Pprof serves net/http/pprof under /debug/pprof/ on the metrics listener: for profiling only (it is off
	// unless asked for).
	Pprof bool
	// Ready, if set, is closed once the policies are loaded and the replica serves them.
	Ready chan<- struct{}
	// ServerOptions adjusts the server configuration before the server is built (rate limits in tests).
	ServerOptions func(*issuer.ServerConfig)
	// Peers, if set, gives each revocation journal one writer among the replicas: the replica holding its
	// Lease decides, and the others send it their decisions over the peer port. Without it every replica
	// writes every journal (compare-and-swap keeps that correct, not fast).
	Peers *Peers
}

// Peers configures journal ownership and the peer port.
type Peers struct {
	// Listener is the peer port: only the issuer's own pods may reach it (the chart's NetworkPolicy).
	Listener net.Listener
	// Advertise is where the other replicas reach Listener, host:port; "" means Listener's address. It
	// also names this replica among them, so it must be unique (the pod's IP).
	Advertise string
	// KeySecret is the Secret of the issuer's namespace holding the peers' shared key (the controller
	// keeps it).
	KeySecret string
	// LeaseDuration is how long a journal's Lease stands without renewal: how long a dead owner's journal
	// answers 503 at most. Zero means peer.DefaultLeaseDuration.
	LeaseDuration time.Duration
}

// CacheOptions are the replica's informers: every TokenPolicy, and of its own namespace only the Secrets and
// ConfigMaps the controller materialises there (signing keys and users; revocation objects and the subjects
// sessions may be bound to), selected by label.
func CacheOptions(namespace string) cache.Options {
	return cacheOptions(namespace, false)
}

// cacheOptions are CacheOptions, with the replicas' Leases when they forward.
func cacheOptions(namespace string, leases bool) cache.Options {
	secrets, _ := labels.NewRequirement(v1alpha1.LabelComponent, selection.In, []string{v1alpha1.ComponentSigningKeys, v1alpha1.ComponentUsers})
	shards, _ := labels.NewRequirement(v1alpha1.LabelComponent, selection.In, []string{v1alpha1.ComponentRevocations, v1alpha1.ComponentSubjects})
	own := map[string]cache.Config{namespace: {}}
	// managedFields name every data key of a ConfigMap: as large as the keys themselves, and never read.
	opts := cache.Options{Scheme: kube.Scheme(), DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:    {Namespaces: own, Label: labels.NewSelector().Add(*secrets)},
		&corev1.ConfigMap{}: {Namespaces: own, Label: labels.NewSelector().Add(*shards)},
	}}
	if leases {
		opts.ByObject[&coordinationv1.Lease{}] = cache.ByObject{Namespaces: own, Label: labels.SelectorFromSet(labels.Set{v1alpha1.LabelComponent: peer.ComponentLease})}
	}
	return opts
}

// metricsServer serves /metrics, and with pprof net/http/pprof under /debug/pprof/: on a port of its own,
// which the chart's Service does not expose (Prometheus scrapes the pod).
func metricsServer(srv *issuer.Server, withPprof bool) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", srv.MetricsHandler())
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	// No write timeout: a CPU profile takes as long as it is asked to.
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
}

// Run runs one replica until ctx ends, then drains in-flight requests for ShutdownGrace.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.ShutdownGrace == 0 {
		o.ShutdownGrace = 10 * time.Second
	}
	// Shard objects are read and written many times a second over the cluster network; gzip of responses
	// costs the API server and the replica more CPU than it saves there.
	cfg = rest.CopyConfig(cfg)
	cfg.DisableCompression = true
	if o.Namespace == "" {
		return errors.New("no namespace for the issuer")
	}
	informers, err := cache.New(cfg, cacheOptions(o.Namespace, o.Peers != nil))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cl, err := client.New(cfg, client.Options{Scheme: kube.Scheme()})
	if err != nil {
		return err
	}
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	store := configmap.New(cl, cl, configmap.Options{Budget: o.ShardBudget, WriteTimeout: o.WriteTimeout, Linger: o.Linger, Metrics: configmap.NewMetrics(registry)})
	shardInformer, err := informers.GetInformer(ctx, &corev1.ConfigMap{})
	if err != nil {
		return err
	}
	if _, err := shardInformer.AddEventHandler(store.EventHandler()); err != nil {
		return err
	}
	var routed revocation.Store = store
	var owners *peer.Owners
	var peerServer *http.Server
	if o.Peers != nil {
		if owners, peerServer, routed, err = o.peers(ctx, informers, cl, store, registry); err != nil {
			return err
		}
	}
	source := policies.New(informers, o.Namespace, o.ExternalURL, o.Clock, o.Logger.WithName("policies"))
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: clientset.EventsV1()})
	stopEvents := make(chan struct{})
	broadcaster.StartRecordingToSink(stopEvents)
	defer func() { close(stopEvents); broadcaster.Shutdown() }()

	sc := issuer.ServerConfig{
		ExternalURL: o.ExternalURL,
		Policies:    source,
		Store:       routed,
		// Reviews expire by the real clock: they stand for the API server's answers, not for token times.
		Authenticator:  &issuer.CachingAuthenticator{Next: &issuer.TokenReviewer{Reviews: clientset.AuthenticationV1().TokenReviews()}, Clock: clock.RealClock{}},
		Clock:          o.Clock,
		Events:         broadcaster.NewRecorder(kube.Scheme(), "tokenwarden-issuer"),
		Logger:         o.Logger,
		Registry:       registry,
		IPRate:         o.IPRate,
		UsernameRate:   o.UsernameRate,
		TrustedProxies: o.TrustedProxies,
	}
	if o.ServerOptions != nil {
		o.ServerOptions(&sc)
	}
	srv, err := issuer.NewServer(sc)
	if err != nil {
		return err
	}

	cacheDone := make(chan error, 1)
	go func() { cacheDone <- informers.Start(ctx) }()
	httpServer := issuer.NewHTTPServer(o.Listener.Addr().String(), srv.Handler())
	serve := func() error { return httpServer.Serve(o.Listener) }
	if o.TLSCertFile != "" {
		// A renewed pair (a mounted Secret cert-manager or the controller rewrites) is served without a
		// restart.
		certs, err := certwatcher.New(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("load the TLS certificate: %w", err)
		}
		go func() { _ = certs.Start(ctx) }()
		httpServer.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate}
		serve = func() error { return httpServer.ServeTLS(o.Listener, "", "") }
	}
	if o.MetricsListener != nil {
		metricsServer := metricsServer(srv, o.Pprof)
		go func() { _ = metricsServer.Serve(o.MetricsListener) }()
		defer metricsServer.Close()
	}
	served := make(chan error, 1)
	go func() { served <- serve() }() // /readyz answers 503 until the policies are loaded
	metricsAddress := ""
	if o.MetricsListener != nil {
		metricsAddress = o.MetricsListener.Addr().String()
	}
	peerAddress := ""
	if o.Peers != nil {
		peerAddress = o.Peers.advertise()
	}
	o.Logger.Info("Serving", "address", o.Listener.Addr().String(), "metricsAddress", metricsAddress, "peerAddress", peerAddress, "externalURL", o.ExternalURL)
	if err := source.Start(ctx, informers); err != nil {
		_ = httpServer.Close()
		return err
	}
	if o.Peers != nil {
		go owners.Run(ctx)
		go func() { _ = peerServer.Serve(o.Peers.Listener) }()
		defer peerServer.Close()
	}
	o.Logger.Info("Policies loaded; ready")
	if o.Ready != nil {
		close(o.Ready)
	}

	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	case err := <-cacheDone:
		return fmt.Errorf("informers stopped: %w", err)
	}
	shutdownCtx, stop := context.WithTimeout(context.Background(), o.ShutdownGrace)
	defer stop()
	if err := httpServer.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// advertise is where the other replicas reach this one.
func (p *Peers) advertise() string {
	if p.Advertise != "" {
		return p.Advertise
	}
	return p.Listener.Addr().String()
}

// peers sets up journal ownership: the Owners fed by the Lease informer, the peer key, the peer port's
// server deciding on store, and the Router the issuer's server uses instead of store.
func (o *Options) peers(ctx context.Context, informers cache.Cache, cl client.Client, store *configmap.Store, registry prometheus.Registerer) (*peer.Owners, *http.Server, revocation.Store, error) {
	p := o.Peers
	advertise := p.advertise()
	if p.KeySecret == "" {
		return nil, nil, nil, errors.New("journal ownership needs the peer key's Secret")
	}
	journals := func() []string {
		var list corev1.ConfigMapList
		if err := informers.List(ctx, &list, client.InNamespace(o.Namespace), client.MatchingLabels{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations},
			client.UnsafeDisableDeepCopy); err != nil {
			return nil
		}
		var out []string
		for i := range list.Items {
			if name := list.Items[i].Name; strings.HasSuffix(name, revocation.JournalName("")) {
				out = append(out, name)
			}
		}
		return out
	}
	owners := peer.NewOwners(peer.OwnersConfig{Namespace: o.Namespace, Identity: advertise, Address: advertise, LeaseDuration: p.LeaseDuration,
		Client: cl, Journals: journals, Logger: o.Logger.WithName("owners")})
	leaseInformer, err := informers.GetInformer(ctx, &coordinationv1.Lease{})
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := leaseInformer.AddEventHandler(owners.EventHandler()); err != nil {
		return nil, nil, nil, err
	}
	keys := &peer.Keys{}
	go peer.LoadKeys(ctx, cl, types.NamespacedName{Namespace: o.Namespace, Name: p.KeySecret}, keys, o.Logger.WithName("peers"))
	metrics := peer.NewMetrics(registry)
	handler := &peer.Server{Keys: keys, Owners: owners, Local: store, Metrics: metrics, Namespace: o.Namespace}
	server := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	o.Logger.Info("Forwarding decisions to journal owners", "peerAddress", advertise, "leaseDuration", p.LeaseDuration)
	return owners, server, peer.NewRouter(store, owners, keys, metrics), nil
}

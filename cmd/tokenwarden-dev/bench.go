package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/cmd/internal/subcommand"
	"github.com/tokenwarden/tokenwarden/internal/bench"
)

// BenchConfig is the load tool's configuration.
type BenchConfig struct {
	bench.Config
	ServeBound string // internal: serve the bound handler for this algorithm
	Listen     string
}

func benchFlags(fs *flag.FlagSet) subcommand.Runner {
	c := &BenchConfig{}
	self, _ := os.Executable()
	fs.StringVar(&c.Assets, "control-plane", os.Getenv("KUBEBUILDER_ASSETS"), "folder with kube-apiserver and etcd (make bench passes it)")
	fs.StringVar(&c.CRDDir, "crd-dir", "config/crd/bases", "folder of the CRDs")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "how long each scenario runs")
	fs.BoolVar(&c.Full, "full", false, "run the whole matrix (every kind x algorithm x concurrency x session count) instead of the default selection")
	fs.StringVar(&c.Only, "only", "", `run only the scenarios whose description contains this, such as "refresh EdDSA c64 10k"`)
	fs.StringVar(&c.Profile, "profile", "", "folder to write CPU profiles of the issuer under the EdDSA refresh scenarios (c64, 10k sessions): issuer-refresh-eddsa-c64.pprof on one replica, issuer-refresh-eddsa-c64-<n>x-<i>.pprof for replica i of n")
	fs.StringVar(&c.IssuerBinary, "issuer-binary", filepath.Join(filepath.Dir(self), "tokenwarden"), "the tokenwarden binary to run as the issuer replicas (make bench builds it beside this one)")
	fs.StringVar(&c.WorkDir, "work-dir", filepath.Join(os.TempDir(), "tokenwarden-bench"), "folder for the processes' logs and the kubeconfig")
	fs.StringVar(&c.ServeBound, "serve-bound", "", "internal: serve the bound refresh handler for this algorithm")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "internal: address of the bound handler (loopback)")
	return c
}

// Validate checks the configuration before anything starts.
func (c *BenchConfig) Validate() error {
	if c.ServeBound != "" {
		switch v1alpha1.SigningAlgorithm(c.ServeBound) {
		case v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.RS256, v1alpha1.HS256:
		default:
			return fmt.Errorf("--serve-bound %q: not an algorithm", c.ServeBound)
		}
		host, _, err := net.SplitHostPort(c.Listen)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("--listen %q: the bound handler serves loopback only", c.Listen)
		}
		return nil
	}
	var errs []error
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(c.Assets, bin)); c.Assets == "" || err != nil {
			errs = append(errs, fmt.Errorf("no %s in --control-plane %q: run 'make bench', which builds the control plane once and passes it", bin, c.Assets))
		}
	}
	if fi, err := os.Stat(c.IssuerBinary); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		errs = append(errs, fmt.Errorf("--issuer-binary %q is not an executable file: run 'make bench', which builds bin/tokenwarden beside bin/tokenwarden-dev", c.IssuerBinary))
	}
	if c.Duration < time.Second || c.Duration > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--duration %s: want 1s to 10m", c.Duration))
	}
	return errors.Join(errs...)
}

// Run runs the load tool, or the bound handler.
func (c *BenchConfig) Run(ctx context.Context) error {
	if c.ServeBound != "" {
		h, err := bench.BoundHandler(v1alpha1.SigningAlgorithm(c.ServeBound))
		if err != nil {
			return err
		}
		srv := &http.Server{Addr: c.Listen, Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go func() { <-ctx.Done(); _ = srv.Close() }()
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// An absolute path: a bare name would be looked up in $PATH.
	if c.IssuerBinary, err = filepath.Abs(c.IssuerBinary); err != nil {
		return err
	}
	c.BoundBinary, c.Out = self, os.Stdout
	return bench.Run(ctx, c.Config)
}

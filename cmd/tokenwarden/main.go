package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/apimachinery/pkg/util/validation"
)

// command is one subcommand: it registers its flags, then runs with them.
type command struct {
	name, summary string
	flags         func(fs *flag.FlagSet) runner
}

// runner is a parsed, validated configuration ready to run.
type runner interface {
	Validate() error
	Run(ctx context.Context) error
}

var commands = []command{
	{"controller", "run the TokenPolicy controller", controllerFlags},
	{"issuer", "serve the token endpoints of every TokenPolicy", issuerFlags},
	{"dev", "run the whole product on a local control plane (make run)", devFlags},
	{"bench", "measure throughput, latency, API writes and CPU under load on loopback (make bench)", benchFlags},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "tokenwarden:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return errors.New("no subcommand")
		}
		return flag.ErrHelp
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		fs := flag.NewFlagSet("tokenwarden "+c.name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		r := c.flags(fs)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("%s: unexpected arguments %q", c.name, fs.Args())
		}
		if err := r.Validate(); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		return r.Run(ctx)
	}
	usage(stderr)
	return fmt.Errorf("unknown subcommand %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: tokenwarden <subcommand> [flags]\n\nSubcommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'tokenwarden <subcommand> -h' for its flags.")
}

// podNamespace is the namespace the process runs in, for flag defaults: $POD_NAMESPACE (the chart sets it
// from the downward API), else the namespace of the mounted ServiceAccount token, else "".
func podNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// validNamespace checks a namespace flag.
func validNamespace(flagName, ns string) error {
	if errs := validation.IsDNS1123Label(ns); ns == "" || len(errs) > 0 {
		return fmt.Errorf("--%s must name a namespace (it defaults to $POD_NAMESPACE or the pod's own), got %q", flagName, ns)
	}
	return nil
}

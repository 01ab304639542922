package main

import (
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tokenwarden/tokenwarden/cmd/internal/subcommand"
)

// runner is what controllerFlags and issuerFlags return: a parsed configuration ready to run.
type runner = subcommand.Runner

var program = subcommand.Program{
	Name: "tokenwarden",
	Commands: []subcommand.Command{
		{Name: "controller", Summary: "run the TokenPolicy controller", Flags: controllerFlags},
		{Name: "issuer", Summary: "serve the token endpoints of every TokenPolicy", Flags: issuerFlags},
	},
	Note: "The dev mode (make run) and the load tool (make bench) are the dev and bench subcommands of\n" +
		"tokenwarden-dev (./cmd/tokenwarden-dev), a separate binary that the image does not carry.",
}

func main() { program.Main() }

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

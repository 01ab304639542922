package main

import (
	"errors"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tokenwarden/tokenwarden"

// testCode says why a package the binary links is test code, or "".
func testCode(pkg string) string {
	switch {
	case pkg == "testing" || strings.HasPrefix(pkg, "testing/") || pkg == "net/http/httptest":
		return "the standard library's test support"
	case strings.Contains(pkg, "/envtest") || strings.HasPrefix(pkg, "sigs.k8s.io/controller-runtime/pkg/internal/testing/"):
		return "envtest, which starts a local control plane"
	case slices.Contains(strings.Split(pkg, "/"), "fake"):
		return "a fake client"
	case pkg == module+"/internal/bench" || pkg == module+"/internal/testenv" || strings.HasPrefix(pkg, module+"/test/"):
		return "tokenwarden's load tool or test support, which cmd/tokenwarden-dev links"
	}
	return ""
}

// TestTheProductionBinaryLinksNoTestCode lists the packages ./cmd/tokenwarden links, built as the
// Dockerfile builds it, and fails on any that is test code: the standard library's testing packages,
// envtest, fake clients, the load tool. (client-go's typed clients link k8s.io/client-go/testing and
// apimachinery's testrestmapper, their fake-client plumbing; neither links the testing package, which the
// list would show.)
func TestTheProductionBinaryLinksNoTestCode(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go tool in $PATH (go test puts its own there): %v", err)
	}
	cmd := exec.Command(goBin, "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
			stderr = exit.Stderr
		}
		t.Fatalf("go list -deps ./cmd/tokenwarden: %v\n%s", err, stderr)
	}
	importers := map[string][]string{} // package -> the linked packages that import it
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		importers[fields[0]] = importers[fields[0]]
		for _, imp := range fields[1:] {
			importers[imp] = append(importers[imp], fields[0])
		}
	}
	// The list is the binary's: it holds both roles.
	for _, want := range []string{module + "/controllers", module + "/issuer/app"} {
		if _, ok := importers[want]; !ok {
			t.Fatalf("go list -deps ./cmd/tokenwarden has no %s: not the production binary's list", want)
		}
	}
	for _, pkg := range slices.Sorted(maps.Keys(importers)) {
		if why, by := testCode(pkg), importers[pkg]; why != "" {
			t.Errorf("the production binary links %s (%s), imported by %s", pkg, why, strings.Join(by, ", "))
		}
	}
}

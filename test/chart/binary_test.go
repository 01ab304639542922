package chart

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// buildBinary builds ./cmd/tokenwarden, the binary of the image.
func buildBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(t.TempDir(), "tokenwarden")
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/tokenwarden")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/tokenwarden: %v\n%s", err, b)
	}
	return out
}

// expandArgs replaces each $(NAME) in args with the value the kubelet would give it: the container's
// environment, its downward-API fields filled with what a pod of the Deployment could have.
func expandArgs(t *testing.T, d *unstructured.Unstructured) []string {
	t.Helper()
	c := container(t, d)
	fields := map[string]string{"metadata.name": d.GetName() + "-7d9c8b6f5-x2x4q", "metadata.namespace": d.GetNamespace(),
		"status.podIP": "10.244.1.7", "spec.nodeName": "node-1", "spec.serviceAccountName": podSpec(t, d).ServiceAccountName}
	var pairs []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			f := e.ValueFrom.FieldRef
			if f == nil || fields[f.FieldPath] == "" {
				t.Fatalf("%s: environment variable %s from %+v; want a literal or a known downward-API field", identity(d), e.Name, e.ValueFrom)
			}
			v = fields[f.FieldPath]
		}
		pairs = append(pairs, "$("+e.Name+")", v)
	}
	replacer := strings.NewReplacer(pairs...)
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = replacer.Replace(a)
		if strings.Contains(args[i], "$(") {
			t.Errorf("%s: argument %q names a variable the container does not define", identity(d), a)
		}
	}
	return args
}

// TestTheBinaryAcceptsTheArgumentsBothInstallationsGiveIt runs the binary with each Deployment's arguments
// (the variables in them expanded as the kubelet does) and no cluster to reach: parsing and validating the
// flags must succeed, so that the run ends only when it looks for a kubeconfig. A renamed or removed flag,
// or a value the binary refuses, fails the test.
func TestTheBinaryAcceptsTheArgumentsBothInstallationsGiveIt(t *testing.T) {
	bin := buildBinary(t)
	installations := map[string][]*unstructured.Unstructured{
		"the chart with default values":            renderChart(t, defaultRelease, defaultNamespace, ""),
		"the chart with every optional feature on": renderChart(t, "features", defaultNamespace, everyFeature),
		"the kustomize installation":               renderKustomize(t),
	}
	for name, objs := range installations {
		for _, d := range objs {
			if d.GetKind() != "Deployment" {
				continue
			}
			t.Run(name+" "+d.GetName(), func(t *testing.T) {
				args := expandArgs(t, d)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, args...)
				home := t.TempDir()
				cmd.Env = []string{"HOME=" + home, "KUBECONFIG=" + filepath.Join(home, "missing")} // no cluster, not even in-cluster
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				err := cmd.Run()
				got := stderr.String()
				if err == nil || strings.Contains(got, "flag provided but not defined") || strings.Contains(got, "invalid value") ||
					strings.HasPrefix(got, "tokenwarden: "+args[0]+":") || !strings.Contains(got, "configuration") {
					t.Errorf("tokenwarden %s: got %v, %q; want the flags accepted and the run to stop at finding no kubeconfig", strings.Join(args, " "), err, got)
				}
			})
		}
	}
}

package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/tokenwarden/tokenwarden/internal/kube"
)

// Env is a running control plane.
type Env struct {
	Config *rest.Config
	Client client.Client // uncached: reads what the API server holds now
	Scheme *k8sruntime.Scheme
	env    *envtest.Environment
	dirs   []string // folders of a restartable control plane, deleted by Stop
}

// Options adjust the control plane StartWith brings up.
type Options struct {
	// Restartable gives etcd a data folder and the API server a certificate folder of their own, kept
	// when either process stops, so that Environment().ControlPlane.Etcd or .APIServer can be stopped and
	// started again with the same data, port and certificates. (envtest deletes the folders it made
	// itself whenever a process stops.) Stop deletes them.
	Restartable bool
}

// RepoRoot is the folder of go.mod.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Start starts kube-apiserver and etcd with the CRDs of config/crd/bases. KUBEBUILDER_ASSETS must name
// the binaries (make test sets it); without it Start says how to get them.
func Start() (*Env, error) { return StartWith(Options{}) }

// StartWith is Start with options.
func StartWith(o Options) (*Env, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests with 'make test', which builds the control plane once and sets it")
	}
	e := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var dirs []string
	if o.Restartable {
		for _, name := range []string{"etcd", "apiserver"} {
			d, err := os.MkdirTemp("", "tokenwarden-"+name+"-")
			if err != nil {
				return nil, err
			}
			dirs = append(dirs, d)
		}
		e.ControlPlane.Etcd = &envtest.Etcd{DataDir: dirs[0]}
		e.ControlPlane.APIServer = &envtest.APIServer{CertDir: dirs[1]}
	}
	if e.ControlPlane.APIServer == nil {
		e.ControlPlane.APIServer = &envtest.APIServer{}
	}
	// Without a bound, a stopping API server waits for every open watch to end before it exits.
	e.ControlPlane.APIServer.Configure().Set("shutdown-watch-termination-grace-period", "1s")
	cfg, err := e.Start()
	if err != nil {
		removeAll(dirs)
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	scheme := kube.Scheme()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = e.Stop()
		removeAll(dirs)
		return nil, err
	}
	return &Env{Config: cfg, Client: c, Scheme: scheme, env: e, dirs: dirs}, nil
}

// Stop stops the control plane.
func (e *Env) Stop() error {
	defer removeAll(e.dirs)
	return e.env.Stop()
}

func removeAll(dirs []string) {
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
}

// Environment is the envtest environment, for tests that stop and restart parts of it.
func (e *Env) Environment() *envtest.Environment { return e.env }

// Main runs a package's tests against one control plane, started before and stopped after them. Each
// setup function runs once the control plane is up.
func Main(m *testing.M, env **Env, setup ...func(*Env) error) { MainWith(m, env, Options{}, setup...) }

// MainWith is Main with options for the control plane.
func MainWith(m *testing.M, env **Env, o Options, setup ...func(*Env) error) {
	ctrl.SetLogger(logr.Discard()) // tests assert on behaviour; controller-runtime's logs would only be noise
	e, err := StartWith(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, f := range setup {
		if err := f(e); err != nil {
			fmt.Fprintln(os.Stderr, "test setup:", err)
			_ = e.Stop()
			os.Exit(1)
		}
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop control plane:", err)
	}
	os.Exit(code)
}

var namespaces atomic.Int64

// Namespace creates a namespace of its own for one test. (envtest runs no namespace controller, so
// namespaces are never cleaned up; every test takes a fresh one.)
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", strings.ToLower(sanitize(t.Name())), namespaces.Add(1))
	if len(name) > 63 {
		name = name[len(name)-63:]
		name = strings.TrimLeft(name, "-")
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// Eventually polls cond until it returns true or the timeout passes, then fails the test with what cond
// last said.
func Eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	var why string
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		var ok bool
		ok, why = cond()
		return ok, nil
	})
	if err != nil {
		t.Fatalf("condition not met within %s: %s", timeout, why)
	}
}

package reliability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// buildIssuer builds the tokenwarden binary once per test binary run.
var buildIssuer = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "tokenwarden-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "tokenwarden")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/tokenwarden")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as make bench builds it, so the build cache serves it
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/tokenwarden: %v\n%s", err, out)
	}
	return bin, nil
})

// kubeconfig writes a kubeconfig for a new API user with every permission, for the binary.
func kubeconfig(t *testing.T) string {
	user, err := env.Environment().AddUser(envtest.User{Name: "issuer-under-test", Groups: []string{"system:masters"}}, nil)
	must(t, err)
	b, err := user.KubeConfig()
	must(t, err)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, os.WriteFile(path, b, 0o600))
	return path
}

// startBinary runs `tokenwarden issuer` as a process of its own, on a port it picks, and waits until it
// serves the fixture's policy. Its stop is SIGKILL: no drain, no shutdown, nothing flushed.
func (f *fixture) startBinary(t *testing.T, bin, kubeconfig string, logs io.Writer, flags ...string) *replica {
	if logs == nil {
		logs = io.Discard
	}
	cmd := exec.Command(bin, append([]string{"issuer", "--external-url", externalURL, "--namespace", issuerNS, "--listen", "127.0.0.1:0",
		"--metrics-listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--peer-key-secret", peerSecret, "--lease-duration", leaseDuration.String()}, flags...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	stderr, err := cmd.StderrPipe()
	must(t, err)
	must(t, cmd.Start())
	exited := make(chan struct{})
	addr := make(chan [3]string, 1)
	go func() {
		// The zap JSON log line "Serving" names the addresses; the whole log goes to logs.
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			_, _ = logs.Write(append(sc.Bytes(), '\n'))
			var line struct {
				Msg, Address   string
				MetricsAddress string `json:"metricsAddress"`
				PeerAddress    string `json:"peerAddress"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "Serving" && line.Address != "" {
				select {
				case addr <- [3]string{line.Address, line.MetricsAddress, line.PeerAddress}:
				default:
				}
			}
		}
		_, _ = io.Copy(logs, stderr)
		_ = cmd.Wait()
		close(exited)
	}()
	var base, metrics, peer string
	select {
	case a := <-addr:
		base, metrics, peer = "http://"+a[0], "http://"+a[1], a[2]
	case <-exited:
		t.Fatalf("tokenwarden issuer exited before serving")
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("tokenwarden issuer did not serve within 60s")
	}
	var once sync.Once
	r := &replica{base: base, metrics: metrics, peer: peer, stop: func() {
		once.Do(func() {
			_ = cmd.Process.Kill() // SIGKILL
			<-exited
		})
	}}
	t.Cleanup(r.stop)
	f.waitServed(base)
	return r
}

// TestAReplicaKilledMidBatchLosesNothingItAcknowledged runs the issuer binary as a process next to an
// in-process replica, drives both with load, and SIGKILLs the process while its requests (and their
// batched shard writes) are in flight. Every refresh that was answered 200 has its generation durably
// recorded (the returned token refreshes; its predecessor is reuse), every acknowledged logout and
// revocation holds, and requests that got no response succeed when retried with the same token (the
// grace period gives a retried refresh the successor its lost answer carried).
func TestAReplicaKilledMidBatchLosesNothingItAcknowledged(t *testing.T) {
	bin, err := buildIssuer()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	// The binary runs on the real clock, so the in-process replica does too.
	f := newFixture(t, fixtureOptions{replicas: 1, replica: replicaOptions{clock: clock.RealClock{}}})
	kc := kubeconfig(t)
	proc := f.startBinary(t, bin, kc, nil)
	f.mu.Lock()
	f.replicas = append(f.replicas, proc)
	f.mu.Unlock()

	l := newLoad(t, f)
	halt := make(chan struct{})
	wait := l.run(loadConfig{workers: 6, sessions: 3, maxOps: 5000, pace: 2 * time.Millisecond, duplicates: true}, halt)
	defer func() { close(halt); wait() }()
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		n := l.acked(opRefresh) + l.acked(opDuplicate)
		return n >= 60, fmt.Sprintf("%d refreshes acknowledged", n)
	})
	proc.stop()
	l.fault("issuer process SIGKILLed under load")
	t.Logf("process killed after %s", time.Since(began).Round(time.Millisecond))

	// Requests now fail on the dead replica and are retried on the other; then a new process takes its place.
	restarted := f.startBinary(t, bin, kc, nil)
	f.replace(1, restarted)
	l.fault("issuer process started again")
	n := l.acked(opRefresh)
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		return l.acked(opRefresh) >= n+20, "refreshes after the restart"
	})
	close(halt)
	wait()
	halt, wait = make(chan struct{}), func() {}

	sum := l.verify()
	t.Log(l.table("issuer process SIGKILLed under load", sum, time.Since(began)))
	lostAnswers := 0
	for k, v := range l.errs {
		if strings.HasSuffix(k, "no response") {
			lostAnswers += v
		}
	}
	t.Logf("requests without a response (retried with the same token): %d", lostAnswers)
	if len(sum.lost) > 0 || len(l.violations) > 0 {
		t.Fatalf("%d acknowledged operations lost, %d invariant violations", len(sum.lost), len(l.violations))
	}
	if r, err := get(f.replica(1).base + "/readyz"); err != nil || r.status != http.StatusOK {
		t.Errorf("the restarted process is not ready: %v %v", r, err)
	}
}

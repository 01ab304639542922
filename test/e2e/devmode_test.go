package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// TestMakeRunFromLoginToRevocation is the README's first walk: make run, log in, refresh, revoke, Ctrl-C.
func TestMakeRunFromLoginToRevocation(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests with 'make test'")
	}
	dataDir := t.TempDir()
	listen := freeLoopbackAddr(t)
	cmd := exec.Command("make", "--no-print-directory", "run", "RUN_ARGS=--data-dir "+dataDir+" --listen "+listen)
	cmd.Dir = testenv.RepoRoot()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches the whole group, as in a terminal
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, transcript := make(chan error, 1), make(chan string, 1)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case err := <-exited:
			// make itself dies of the SIGINT, as after Ctrl-C in a terminal; what matters is that
			// tokenwarden stopped what it started, which it says, and that nothing is left (below).
			var exit *exec.ExitError
			if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == -1) {
				t.Errorf("make run after Ctrl-C: %v; want an exit by the interrupt\nstderr:\n%s", err, tail(stderr.String()))
			}
			if all := <-transcript; !strings.Contains(all, "Stopping the control plane") {
				t.Errorf("make run did not say it stopped the control plane:\n%s\nstderr:\n%s", all, tail(stderr.String()))
			}
		case <-time.After(60 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Errorf("make run did not stop within 60s of Ctrl-C")
		}
	}
	t.Cleanup(stop)

	// Read what a user reads until the welcome text ends.
	printed := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if !sent && strings.Contains(sc.Text(), "Press Ctrl-C") {
				printed <- b.String()
				sent = true
			}
		}
		if !sent {
			printed <- b.String()
		}
		transcript <- b.String()
		exited <- cmd.Wait()
	}()
	var out string
	select {
	case out = <-printed:
	case <-time.After(5 * time.Minute):
		t.Fatalf("make run printed no instructions within 5 minutes\nstderr:\n%s", tail(stderr.String()))
	}
	iss := match(t, out, `ISS=(\S+)`)
	kubeconfig := match(t, out, `kubeconfig:\s+(\S+)`)
	if _, err := os.Stat(kubeconfig); err != nil {
		t.Fatalf("the printed kubeconfig: %v", err)
	}
	if !strings.HasPrefix(iss, "http://"+listen+"/") {
		t.Fatalf("issuer URL %q; want it under http://%s", iss, listen)
	}

	// Log in, refresh, then revoke, with plain HTTP as the printed curl commands do.
	login := postForm(t, iss+"/token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}}, http.StatusOK)
	refreshed := postForm(t, iss+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {login["refresh_token"].(string)}}, http.StatusOK)
	if refreshed["access_token"] == login["access_token"] {
		t.Fatalf("refresh returned the same access token")
	}
	postForm(t, iss+"/revoke", url.Values{"token": {refreshed["refresh_token"].(string)}}, http.StatusOK)
	refused := postForm(t, iss+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshed["refresh_token"].(string)}}, http.StatusBadRequest)
	if refused["error"] != "invalid_grant" {
		t.Fatalf("refresh after revocation: %v; want invalid_grant", refused)
	}

	// kubectl sees the policy with the printed kubeconfig.
	kubectl := exec.Command("kubectl", "--kubeconfig", kubeconfig, "get", "tokenpolicies", "-A")
	got, err := kubectl.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "payments") || !strings.Contains(string(got), "True") {
		t.Fatalf("kubectl get tokenpolicies: %v\n%s", err, got)
	}

	stop()
	// Nothing is left running: the issuer's port is closed and no process uses the data folder.
	if c, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		c.Close()
		t.Errorf("the issuer still listens on %s after Ctrl-C", listen)
	}
	if procs := processesMentioning(dataDir); len(procs) > 0 {
		t.Errorf("processes still running after Ctrl-C: %v", procs)
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func match(t *testing.T, s, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("make run printed no %s:\n%s", re, s)
	}
	return m[1]
}

func postForm(t *testing.T, u string, form url.Values, want int) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s: status %d; want %d: %s", u, resp.StatusCode, want, body)
	}
	out := map[string]any{}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("POST %s: body is not JSON: %s", u, body)
		}
	}
	return out
}

// processesMentioning lists the processes whose command line mentions s.
func processesMentioning(s string) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if line := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(line, s) {
			out = append(out, fmt.Sprintf("%s: %s", filepath.Base(filepath.Dir(f)), line))
		}
	}
	return out
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

package reliability

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// klogVerbosity is how verbose klog (client-go's logs) is made in-process: the most verbose level at which
// client-go does not dump request and response bodies (it does from 8 on; see docs/reliability.md).
const klogVerbosity = 7

// TestNothingSecretInLogs runs login, refresh, introspection, revocation, logout and token exchange, with
// refusals of each kind, through issuers logging at their most verbose level, and fails if any access or
// refresh token, password, ServiceAccount token or key material appears in what they logged: an
// in-process replica whose logger (and klog, as the binary routes it) writes to a buffer, and the
// tokenwarden binary with --zap-log-level=10, whose whole stderr is searched.
func TestNothingSecretInLogs(t *testing.T) {
	t.Run("in-process replica", func(t *testing.T) {
		logs := &syncBuffer{}
		logger := zap.New(zap.WriteTo(logs), zap.Level(zapcore.Level(-10)))
		klogTarget.Store(&logger) // klog into the same logger, as cmd/tokenwarden routes it
		fs := flag.NewFlagSet("klog", flag.ContinueOnError)
		klog.InitFlags(fs)
		must(t, fs.Set("v", strconv.Itoa(klogVerbosity)))
		defer func() {
			_ = fs.Set("v", "0")
			discard := logr.Discard()
			klogTarget.Store(&discard)
		}()
		f := newFixture(t, fixtureOptions{replicas: 2, replica: replicaOptions{logger: &logger}, spec: noGrace})
		secrets, sid := exercise(t, f)
		checkLogs(t, logs.String(), secrets, sid)
	})
	t.Run("tokenwarden issuer --zap-log-level=10", func(t *testing.T) {
		bin, err := buildIssuer()
		if err != nil {
			t.Fatal(err)
		}
		f := newFixture(t, fixtureOptions{spec: noGrace})
		logs := &syncBuffer{}
		proc := f.startBinary(t, bin, kubeconfig(t), logs, "--zap-log-level=10")
		f.mu.Lock()
		f.replicas = append(f.replicas, proc)
		f.mu.Unlock()
		secrets, sid := exercise(t, f)
		proc.stop() // everything it logged is in logs once it has exited
		checkLogs(t, logs.String(), secrets, sid)
	})
}

func noGrace(s *v1alpha1.TokenPolicySpec) {
	s.RefreshToken.ReuseGracePeriod = metav1.Duration{} // so that presenting a spent token is reuse
}

// exercise runs every endpoint on the fixture's replicas, and on a second policy signing with HS256, and
// returns what must never be logged, and a session id (which may be).
func exercise(t *testing.T, f *fixture) (secrets []string, sessionID string) {
	ctx := context.Background()
	hs := &v1alpha1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "internal"}, Spec: v1alpha1.TokenPolicySpec{
		Audiences: []string{"internal-api"}, Signing: v1alpha1.SigningSpec{Algorithm: v1alpha1.HS256},
		Login: v1alpha1.LoginSpec{PasswordSecretName: "users"}, Revocation: v1alpha1.RevocationSpec{Shards: 1}}}
	users := &corev1.Secret{}
	must(t, env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "users"}, users))
	users.Annotations[v1alpha1.AnnotationAllowedPolicies] += ",internal" // its users may log in there too
	must(t, env.Client.Update(ctx, users))
	must(t, env.Client.Create(ctx, hs))
	hsPath := "/" + f.ns + "/internal/"
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(hs), hs); err != nil {
			return false, err.Error()
		}
		if !meta.IsStatusConditionTrue(hs.Status.Conditions, v1alpha1.ConditionReady) {
			return false, "HS256 policy not Ready"
		}
		r, err := get(f.replica(0).base + hsPath + "jwks.json")
		return err == nil && r.status == http.StatusOK, "HS256 policy not served"
	})

	var tokens []string
	add := func(toks ...string) {
		for _, tok := range toks {
			if tok == "" {
				t.Fatalf("an operation returned no token")
			}
			tokens = append(tokens, tok)
			secrets = append(secrets, tok)
			if parts := strings.Split(tok, "."); len(parts) == 3 {
				secrets = append(secrets, parts[2]) // the signature alone
			}
		}
	}
	ok := func(r response, err error) response {
		t.Helper()
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("%v %v", r, err)
		}
		return r
	}

	// Every endpoint.
	login := ok(f.tryLogin(0, "alice"))
	add(login.str("access_token"), login.str("refresh_token"))
	refreshed := ok(f.tryRefresh(1, login.str("refresh_token")))
	add(refreshed.str("access_token"), refreshed.str("refresh_token"))
	jsonLogin := ok(postJSON(f.url(1, "login"), map[string]string{"username": "bob", "password": password}))
	add(jsonLogin.str("access_token"), jsonLogin.str("refresh_token"))
	jsonRefresh := ok(postJSON(f.url(0, "refresh"), map[string]string{"refresh_token": jsonLogin.str("refresh_token")}))
	add(jsonRefresh.str("access_token"), jsonRefresh.str("refresh_token"))
	for _, tok := range tokens {
		ok(f.tryIntrospect(0, tok))
		ok(f.tryIntrospect(1, tok))
	}
	appToken := f.saToken("app")
	secrets = append(secrets, appToken, f.bearer, strings.Split(appToken, ".")[2], strings.Split(f.bearer, ".")[2])
	exchanged := ok(postForm(f.url(0, "token"), url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {appToken}, "subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}}, nil))
	add(exchanged.str("access_token"), exchanged.str("refresh_token"))
	ok(f.tryRevoke(1, exchanged.str("access_token"), "access_token"))
	ok(f.tryLogout(0, jsonRefresh.str("refresh_token")))
	// Refusals log too: a reused refresh token, a tampered one, a wrong password, a password typed into
	// the username field, an invalid ServiceAccount token as introspection credentials.
	if r := f.refresh(0, login.str("refresh_token")); r.status != http.StatusBadRequest {
		t.Fatalf("reuse: %v", r)
	}
	tampered := refreshed.str("refresh_token")
	tampered = tampered[:len(tampered)-6] + "AAAAAA"
	secrets = append(secrets, tampered)
	if r := f.refresh(1, tampered); r.status != http.StatusBadRequest {
		t.Fatalf("tampered: %v", r)
	}
	const wrong, typedAsUsername = "hunter2-not-the-password", "correct-horse-battery-staple"
	secrets = append(secrets, password, wrong, typedAsUsername)
	for _, form := range []url.Values{{"username": {"alice"}, "password": {wrong}}, {"username": {typedAsUsername}, "password": {wrong}}} {
		form.Set("grant_type", "password")
		if r, err := postForm(f.url(0, "token"), form, nil); err != nil || r.status != http.StatusBadRequest {
			t.Fatalf("wrong password: %v %v", r, err)
		}
	}
	if r, err := postForm(f.url(1, "introspect"), url.Values{"token": {tokens[0]}}, http.Header{"Authorization": {"Bearer " + tampered}}); err != nil || r.status != http.StatusUnauthorized {
		t.Fatalf("introspection with an invalid bearer: %v %v", r, err)
	}
	hsLogin := ok(postForm(f.replica(0).base+hsPath+"token", url.Values{"grant_type": {"password"}, "username": {"carol"}, "password": {password}}, nil))
	add(hsLogin.str("access_token"), hsLogin.str("refresh_token"))
	hsRefresh := ok(postForm(f.replica(1).base+hsPath+"token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {hsLogin.str("refresh_token")}}, nil))
	add(hsRefresh.str("access_token"), hsRefresh.str("refresh_token"))
	ok(postForm(f.replica(0).base+hsPath+"revoke", url.Values{"token": {hsRefresh.str("refresh_token")}}, nil))

	// Key material, as the Secrets hold it and in the forms it could be printed in.
	for _, name := range []string{"payments-signing-keys", "internal-signing-keys", "users"} {
		s := &corev1.Secret{}
		must(t, env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, s))
		for k, v := range s.Data {
			secrets = append(secrets, base64.StdEncoding.EncodeToString(v)) // how the Secret's JSON carries it
			switch {
			case strings.HasSuffix(k, ".pem"):
				block, _ := pem.Decode(v)
				if block == nil {
					t.Fatalf("%s/%s: not PEM", name, k)
				}
				secrets = append(secrets, base64.StdEncoding.EncodeToString(block.Bytes)[:48]) // the PEM body
				key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
				must(t, err)
				if ed, isEd := key.(ed25519.PrivateKey); isEd {
					secrets = append(secrets, base64.RawURLEncoding.EncodeToString(ed.Seed()), hex.EncodeToString(ed.Seed())) // JWK d
				}
			case strings.HasSuffix(k, ".key"): // HS256 secret
				secrets = append(secrets, base64.RawURLEncoding.EncodeToString(v), base64.StdEncoding.EncodeToString(v), hex.EncodeToString(v), string(v))
			default: // a bcrypt hash
				secrets = append(secrets, string(v))
			}
		}
	}
	return secrets, sid(login.str("access_token"))
}

// checkLogs fails for every secret found in raw. The session id, which the issuer logs on purpose, must
// be found: otherwise the logs are not what the search thinks they are.
func checkLogs(t *testing.T, raw string, secrets []string, sessionID string) {
	if p := os.Getenv("TOKENWARDEN_LOGS_DUMP"); p != "" {
		_ = os.WriteFile(p, []byte(raw), 0o600)
	}
	out := searchable(raw)
	if !strings.Contains(out, sessionID) || !strings.Contains(out, "Session revoked") {
		t.Fatalf("the logs do not show the sessions: the search would find nothing (%d bytes logged)", len(raw))
	}
	leaks := 0
	for _, s := range secrets {
		if i := strings.Index(out, s); i >= 0 {
			leaks++
			start, end := max(0, strings.LastIndexByte(out[:i], '\n')+1), i+len(s)
			if j := strings.IndexByte(out[end:], '\n'); j >= 0 {
				end += j
			}
			line := out[start:end]
			if len(line) > 400 {
				line = line[:400] + "..."
			}
			t.Errorf("a secret (%d bytes, %q...) appears in the logs, in: %s", len(s), s[:min(8, len(s))], line)
		}
	}
	t.Logf("%d bytes of logs, %d secrets searched for, %d found", len(raw), len(secrets), leaks)
}

// hexDumpLine is one line of a hex.Dump: offset, up to 16 bytes in hex, their text.
var hexDumpLine = regexp.MustCompile(`^[0-9a-f]{8}  ((?:[0-9a-f]{2} {1,2}){1,16})`)

// searchable is the logs as they were written, then every string field of every JSON line decoded, and
// every field holding a hex dump (how client-go logs a binary body) turned back into its bytes: a secret
// split across the lines of a dump, or escaped in JSON, is still found.
func searchable(raw string) string {
	var b strings.Builder
	b.WriteString(raw)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			b.WriteString("\n")
			b.WriteString(v)
			if strings.HasPrefix(v, "00000000  ") {
				b.WriteString("\n")
				for _, line := range strings.Split(v, "\n") {
					if m := hexDumpLine.FindStringSubmatch(line); m != nil {
						bs, _ := hex.DecodeString(strings.ReplaceAll(m[1], " ", ""))
						b.Write(bs)
					}
				}
			}
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	for _, line := range strings.Split(raw, "\n") {
		var v any
		if json.Unmarshal([]byte(line), &v) == nil {
			walk(v)
		}
	}
	return b.String()
}

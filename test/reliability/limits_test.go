package reliability

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/issuer"
)

// TestRequestLimits sends an oversize body (413), oversize headers (431), and headers trickled a line at a
// time that never end: the server closes that connection by itself (ReadHeaderTimeout), and goes on
// serving.
func TestRequestLimits(t *testing.T) {
	f := newFixture(t, fixtureOptions{replicas: 1})
	tokenURL := f.url(0, "token")

	big := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {strings.Repeat("x", issuer.DefaultMaxBodyBytes)}}
	if r, err := postForm(tokenURL, big, nil); err != nil || !r.errorIs(http.StatusRequestEntityTooLarge, "invalid_request") {
		t.Errorf("form body over %d bytes: %v %v; want 413 invalid_request", issuer.DefaultMaxBodyBytes, r, err)
	}
	if r, err := postJSON(f.url(0, "login"), map[string]string{"username": "alice", "password": strings.Repeat("x", issuer.DefaultMaxBodyBytes)}); err != nil ||
		r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("JSON body over %d bytes: %v %v; want 413", issuer.DefaultMaxBodyBytes, r, err)
	}
	if r, err := do(http.MethodGet, f.url(0, "jwks.json"), "", nil, http.Header{"X-Padding": {strings.Repeat("x", 64<<10)}}); err != nil ||
		r.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers: %v %v; want 431", r, err)
	}

	// A client that trickles header lines and never ends them. The loop writes a line every 100ms and
	// checks, in between, whether the server has closed the connection; it gives up after a minute (the
	// header timeout is a few seconds: no duration is asserted, only that the server cuts it off).
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.replica(0).base, "http://"))
	must(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST %s/token HTTP/1.1\r\nHost: issuer.test\r\nContent-Type: application/x-www-form-urlencoded\r\n", f.path())
	must(t, err)
	closed := false
	buf := make([]byte, 512)
	deadline := time.Now().Add(time.Minute)
	for i := 0; time.Now().Before(deadline); i++ {
		if _, err := fmt.Fprintf(conn, "X-Slow-%d: %d\r\n", i, i); err != nil {
			closed = true // the server closed the connection and the write failed
			break
		}
		must(t, conn.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
		n, err := conn.Read(buf)
		if n > 0 && !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 408")) {
			t.Fatalf("the server answered headers that never ended: %q", buf[:n])
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			closed = true // EOF or reset: the server closed it
			break
		}
	}
	if !closed {
		t.Fatalf("a client trickling headers kept its connection for a minute; want the server to close it")
	}
	if r, err := get(f.url(0, "jwks.json")); err != nil || r.status != http.StatusOK {
		t.Fatalf("the server after the slow client: %v %v", r, err)
	}
}

// TestPasswordGuessingIsThrottled uses the server's default limits (DefaultUsernameRate, DefaultIPRate) on
// a fake clock, behind a trusted proxy (loopback) so that one test can be many clients, each naming itself
// in X-Forwarded-For. Guessing one user's password from many addresses, and many users' from one address,
// both end in 429 slow_down with Retry-After, for the right password too; an unknown user and a wrong
// password get byte-identical answers; clients behind the proxy are throttled apart; once Retry-After has
// passed, the right password works again. A replica that does not trust the peer ignores the header.
func TestPasswordGuessingIsThrottled(t *testing.T) {
	f := newFixture(t, fixtureOptions{replicas: 1, replica: replicaOptions{defaultLimits: true, trustedProxies: loopback}})
	attemptOn := func(replica int, client, user, pw string) response {
		t.Helper()
		r, err := postForm(f.url(replica, "token"), url.Values{"grant_type": {"password"}, "username": {user}, "password": {pw}},
			http.Header{"X-Forwarded-For": {client}})
		must(t, err)
		return r
	}
	attempt := func(client, user, pw string) response { t.Helper(); return attemptOn(0, client, user, pw) }
	throttled := func(r response) bool {
		s, err := strconv.Atoi(r.header.Get("Retry-After"))
		return r.errorIs(http.StatusTooManyRequests, "slow_down") && err == nil && s >= 1
	}

	// An unknown user and a wrong password: the same answer, byte for byte.
	wrongPassword, unknownUser := attempt("10.0.0.1", "alice", "guess-1"), attempt("10.0.0.2", "mallory", "guess-1")
	if !wrongPassword.errorIs(http.StatusBadRequest, "invalid_grant") || !bytes.Equal(wrongPassword.body, unknownUser.body) ||
		wrongPassword.status != unknownUser.status {
		t.Fatalf("wrong password: %v; unknown user: %v; want the same invalid_grant answer", wrongPassword, unknownUser)
	}
	// A username no users Secret can hold is refused before anything is looked up or counted.
	if r := attempt("10.0.0.3", strings.Repeat("u", 60<<10), "guess"); !r.errorIs(http.StatusBadRequest, "invalid_request") {
		t.Fatalf("a 60 KB username: %v; want 400 invalid_request", r)
	}

	// One username from many addresses: DefaultUsernameRate's burst, then 429, for the right password too.
	userBurst := issuer.DefaultUsernameRate.Burst
	for i := 2; i <= userBurst; i++ {
		if r := attempt(fmt.Sprintf("10.0.0.%d", 10+i), "alice", fmt.Sprintf("guess-%d", i)); !r.errorIs(http.StatusBadRequest, "invalid_grant") {
			t.Fatalf("guess %d for alice: %v; want invalid_grant within the burst of %d", i, r, userBurst)
		}
	}
	if r := attempt("10.0.0.99", "alice", "guess-next"); !throttled(r) {
		t.Fatalf("guess %d for alice from a new address: %v; want 429 slow_down with Retry-After", userBurst+1, r)
	}
	right := attempt("10.0.0.98", "alice", password)
	if !throttled(right) {
		t.Fatalf("the right password while alice is throttled: %v; want 429 (a throttle that let it through would tell a guesser it is right)", right)
	}
	if r, err := do(http.MethodPost, f.url(0, "login"), "application/json", []byte(`{"username":"alice","password":"`+password+`"}`),
		http.Header{"X-Forwarded-For": {"10.0.0.97"}}); err != nil || r.status != http.StatusTooManyRequests {
		t.Fatalf("JSON login while alice is throttled: %v %v; want 429", r, err)
	}
	// Another user is not affected.
	if r := attempt("10.0.0.96", "bob", password); r.status != http.StatusOK {
		t.Fatalf("bob while alice is throttled: %v; want 200", r)
	}

	// 30 wrong passwords from one address (many usernames): DefaultIPRate's burst, then 429 with
	// Retry-After, known user or not; a correct login from another address behind the same proxy is not
	// affected.
	ipBurst := issuer.DefaultIPRate.Burst
	var first429 response
	for i := range 30 {
		user := fmt.Sprintf("user-%d", i)
		if i%3 == 0 {
			user = "carol"
		}
		r := attempt("10.0.1.1", user, "guess")
		switch {
		case i < ipBurst && !r.errorIs(http.StatusBadRequest, "invalid_grant"):
			t.Fatalf("wrong password %d from one address: %v; want invalid_grant within the burst of %d", i, r, ipBurst)
		case i >= ipBurst && !throttled(r):
			t.Fatalf("wrong password %d from one address: %v; want 429 slow_down with Retry-After past the burst of %d", i, r, ipBurst)
		case i == ipBurst:
			first429 = r
		case i == ipBurst+2 && !bytes.Equal(r.body, first429.body): // carol, known, against user-10
			t.Fatalf("throttled answers for a known and an unknown user differ: %v and %v", first429, r)
		}
	}
	if r := attempt("10.0.1.2", "bob", password); r.status != http.StatusOK {
		t.Fatalf("a correct login from another client behind the proxy: %v; want 200", r)
	}

	// A replica that does not trust loopback (only 10.0.0.0/8) throttles the peer, whatever it forwards.
	var tenNet issuer.Prefixes
	must(t, tenNet.Set("10.0.0.0/8"))
	f.addReplica(replicaOptions{defaultLimits: true, trustedProxies: tenNet})
	for i := range ipBurst {
		if r := attemptOn(1, fmt.Sprintf("203.0.113.%d", i), fmt.Sprintf("forger-%d", i), "guess"); !r.errorIs(http.StatusBadRequest, "invalid_grant") {
			t.Fatalf("forged-header guess %d: %v; want invalid_grant within the burst", i, r)
		}
	}
	if r := attemptOn(1, "203.0.113.200", "bob", password); !throttled(r) {
		t.Fatalf("a forged X-Forwarded-For from an untrusted peer past its burst: %v; want 429 (the header changes nothing)", r)
	}

	// A throttle, not a lockout: after Retry-After, the right password works.
	wait, _ := strconv.Atoi(right.header.Get("Retry-After"))
	f.clock.Step(time.Duration(wait) * time.Second)
	if r := attempt("10.0.0.95", "alice", password); r.status != http.StatusOK {
		t.Fatalf("the right password %ds later: %v; want 200", wait, r)
	}
}

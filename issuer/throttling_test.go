package issuer_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/issuer"
)

// loopback trusts the test client's peer, so that X-Forwarded-For can make one test many clients.
var loopback = func() issuer.Prefixes {
	var p issuer.Prefixes
	if err := p.Set("127.0.0.0/8"); err != nil {
		panic(err)
	}
	return p
}()

func from(addr string) http.Header { return http.Header{"X-Forwarded-For": {addr}} }

func passwordForm(user, pw string) url.Values {
	return url.Values{"grant_type": {"password"}, "username": {user}, "password": {pw}}
}

func exchangeForm(subjectToken string) url.Values {
	return url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "subject_token": {subjectToken}}
}

// expectThrottled fails the test unless r is 429 slow_down with a Retry-After of at least a second.
func expectThrottled(t testing.TB, r response) {
	t.Helper()
	expectError(t, r, http.StatusTooManyRequests, "slow_down")
	if got := r.header.Get("Retry-After"); got == "" || got == "0" {
		t.Errorf("got Retry-After %q; want at least 1", got)
	}
}

// TestCorrectLoginsAndExchangesAreNeverThrottled: with the default limits and a clock that never moves (so
// no bucket ever refills), 100 correct password logins and 100 token exchanges from one address, 16 at
// a time, all succeed: a correct attempt costs nothing.
func TestCorrectLoginsAndExchangesAreNeverThrottled(t *testing.T) {
	f := newFixture(t, options{ipRate: issuer.DefaultIPRate, userRate: issuer.DefaultUsernameRate})
	const n, workers = 100, 16
	var wg sync.WaitGroup
	var failed atomic.Int64
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				form := passwordForm("alice", "wonderland")
				if i%2 == 1 {
					form = exchangeForm(saToken("apps", "worker", f.policy.Issuer))
				}
				if r := f.postForm(f.policy, "token", form, nil); r.status != http.StatusOK && failed.Add(1) <= 3 {
					t.Errorf("attempt %d: got %d %s; want 200", i, r.status, r.body)
				}
			}
		})
	}
	for i := range 2 * n {
		next <- i
	}
	close(next)
	wg.Wait()
	if got := failed.Load(); got != 0 {
		t.Fatalf("got %d of %d correct attempts refused; want none", got, 2*n)
	}
}

func TestWrongPasswordsAreThrottledPerUsersSecretAndUsername(t *testing.T) {
	f := newFixture(t, options{userRate: issuer.DefaultUsernameRate, trustedProxies: loopback})
	sameUsers := f.addPolicy("billing-admin", "users")  // reads the same users Secret
	otherUsers := f.addPolicy("billing-batch", "batch") // another Secret (with the same users, for the test)
	attempt := func(p *issuer.Policy, client, user, pw string) response {
		return f.postForm(p, "token", passwordForm(user, pw), from(client))
	}
	burst := issuer.DefaultUsernameRate.Burst
	for i := range burst {
		// From many addresses and through both policies that read the Secret: one budget.
		p := []*issuer.Policy{f.policy, sameUsers}[i%2]
		expectError(t, attempt(p, fmt.Sprintf("10.0.0.%d", i), "alice", "guess"), http.StatusBadRequest, "invalid_grant")
	}
	expectThrottled(t, attempt(sameUsers, "10.0.1.1", "alice", "wonderland"))
	expectThrottled(t, attempt(f.policy, "10.0.1.2", "alice", "wonderland"))
	if r := attempt(f.policy, "10.0.1.3", "bob", "builder"); r.status != http.StatusOK {
		t.Errorf("another user: got %d %s; want 200", r.status, r.body)
	}
	if r := attempt(otherUsers, "10.0.1.4", "alice", "wonderland"); r.status != http.StatusOK {
		t.Errorf("the same name in another users Secret: got %d %s; want 200", r.status, r.body)
	}
	if got := f.metric("tokenwarden_issuer_logins_total", "grant", "password", "outcome", "throttled"); got != 2 {
		t.Errorf("got %v throttled logins counted; want 2", got)
	}
	f.clock.Step(time.Second)
	if r := attempt(f.policy, "10.0.1.5", "alice", "wonderland"); r.status != http.StatusOK {
		t.Errorf("a second later: got %d %s; want 200", r.status, r.body)
	}
}

func TestWrongPasswordsAreThrottledPerClientAddress(t *testing.T) {
	f := newFixture(t, options{ipRate: issuer.RateLimit{PerSecond: 1, Burst: 2}, trustedProxies: loopback})
	attempt := func(client, user, pw string) response {
		return f.postForm(f.policy, "token", passwordForm(user, pw), from(client))
	}
	for range 5 {
		if r := attempt("10.0.0.1", "alice", "wonderland"); r.status != http.StatusOK {
			t.Fatalf("a correct login: got %d %s; want 200", r.status, r.body)
		}
	}
	expectError(t, attempt("10.0.0.1", "u1", "guess"), http.StatusBadRequest, "invalid_grant")
	expectError(t, attempt("10.0.0.1", "u2", "guess"), http.StatusBadRequest, "invalid_grant")
	expectThrottled(t, attempt("10.0.0.1", "u3", "guess"))
	expectThrottled(t, attempt("10.0.0.1", "alice", "wonderland"))
	expectError(t, attempt("10.0.0.2", "u3", "guess"), http.StatusBadRequest, "invalid_grant")
	if r := attempt("10.0.0.3", "alice", "wonderland"); r.status != http.StatusOK {
		t.Errorf("another address: got %d %s; want 200", r.status, r.body)
	}
}

// slowUsers checks passwords as slowly as bcrypt at a cost a Secret may hold, so that parallel attempts
// overlap.
type slowUsers struct{ issuer.PasswordChecker }

func (s slowUsers) Check(username, password string) bool {
	time.Sleep(20 * time.Millisecond) // the duration of the work, not a wait for state
	return s.PasswordChecker.Check(username, password)
}

// TestParallelWrongPasswordsCannotOutrunTheBudget: 40 wrong passwords for one user sent at once, from 40
// addresses: exactly the burst of them is checked; the others are refused, none of them checked.
func TestParallelWrongPasswordsCannotOutrunTheBudget(t *testing.T) {
	f := newFixture(t, options{userRate: issuer.DefaultUsernameRate, trustedProxies: loopback})
	f.policy.Users = slowUsers{f.policy.Users}
	const n = 40
	statuses := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			statuses[i] = f.postForm(f.policy, "token", passwordForm("alice", fmt.Sprintf("guess-%d", i)), from(fmt.Sprintf("10.0.%d.1", i))).status
		})
	}
	close(start)
	wg.Wait()
	count := map[int]int{}
	for _, s := range statuses {
		count[s]++
	}
	if count[http.StatusBadRequest] != issuer.DefaultUsernameRate.Burst || count[http.StatusTooManyRequests] != n-issuer.DefaultUsernameRate.Burst {
		t.Errorf("got answers %v; want %d invalid_grant and the rest 429", count, issuer.DefaultUsernameRate.Burst)
	}
}

// TestOverlongUsernamesAreRefusedBeforeAnyBucket: a username over 256 bytes is invalid_request on every
// login endpoint, and costs neither its address nor anyone's budget; 256 bytes is an ordinary username.
func TestOverlongUsernamesAreRefusedBeforeAnyBucket(t *testing.T) {
	f := newFixture(t, options{ipRate: issuer.DefaultIPRate, userRate: issuer.DefaultUsernameRate})
	long := strings.Repeat("a", 257)
	for range 3 * issuer.DefaultIPRate.Burst {
		expectError(t, f.postForm(f.policy, "token", passwordForm(long, "guess"), nil), http.StatusBadRequest, "invalid_request")
		if r := f.postJSON(f.policy, "login", map[string]string{"username": long, "password": "guess"}); r.status != http.StatusBadRequest ||
			r.answer(t).Error != "invalid_request" {
			t.Fatalf("JSON login: got %d %s; want 400 invalid_request", r.status, r.body)
		}
	}
	expectError(t, f.postForm(f.policy, "token", passwordForm(long[:256], "guess"), nil), http.StatusBadRequest, "invalid_grant")
	if r := f.postForm(f.policy, "token", passwordForm("alice", "wonderland"), nil); r.status != http.StatusOK {
		t.Errorf("a correct login from the same address: got %d %s; want 200 (overlong usernames cost nothing)", r.status, r.body)
	}
}

// TestOverlongUsernamesLeaveNothingBehind sends 10,000 logins, each with another 60 KB username and from
// another address, through the server's handler: the heap after them (after a collection) holds a small fraction
// of what they sent, so no username was kept (as a throttle key, or anywhere else).
func TestOverlongUsernamesLeaveNothingBehind(t *testing.T) {
	f := newFixture(t, options{trustedProxies: loopback})
	const n, size = 10_000, 60 << 10
	prefix := strings.Repeat("u", size-8)
	h := f.server.Handler()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	for i := range n {
		body := passwordForm(fmt.Sprintf("%s%08d", prefix, i), "guess").Encode() // every username another
		r := httptest.NewRequest(http.MethodPost, f.policy.Issuer+"/token", strings.NewReader(body))
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("Content-Type", formType)
		r.Header.Set("X-Forwarded-For", fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest || !bytes.Contains(w.Body.Bytes(), []byte("invalid_request")) {
			t.Fatalf("attempt %d: got %d %s; want 400 invalid_request", i, w.Code, w.Body)
		}
	}
	after := heap()
	sent := uint64(n * size)
	grown := int64(after) - int64(before)
	t.Logf("heap %d -> %d bytes (%+d) after %d usernames of %d bytes (%d MB sent)", before, after, grown, n, size, sent>>20)
	if grown > int64(sent/50) {
		t.Errorf("got the heap %d bytes larger after the requests; want under %d (a fiftieth of the %d bytes sent)", grown, sent/50, sent)
	}
}

// countingAuthenticator counts the reviews of the Authenticator it wraps.
type countingAuthenticator struct {
	issuer.Authenticator
	reviews atomic.Int64
}

func (c *countingAuthenticator) Authenticate(ctx context.Context, token, audience string) (issuer.ServiceAccount, error) {
	c.reviews.Add(1)
	return c.Authenticator.Authenticate(ctx, token, audience)
}

// TestRefusedServiceAccountTokensAreThrottledPerClientAddress: garbage subject tokens and garbage
// introspection bearers cost their address, so that after the burst they are refused without a review;
// a token remembered as good still works from that address, and other addresses are not affected.
func TestRefusedServiceAccountTokensAreThrottledPerClientAddress(t *testing.T) {
	counted := &countingAuthenticator{Authenticator: fakeAuth{}}
	f := newFixture(t, options{ipRate: issuer.DefaultIPRate, trustedProxies: loopback,
		auth: &issuer.CachingAuthenticator{Next: counted}})
	good := saToken("apps", "worker", f.policy.Issuer)
	if r := f.postForm(f.policy, "token", exchangeForm(good), from("10.0.0.1")); r.status != http.StatusOK {
		t.Fatalf("exchange: got %d %s; want 200", r.status, r.body)
	}
	counted.reviews.Store(0)
	burst := issuer.DefaultIPRate.Burst
	for i := range 100 {
		garbage := fmt.Sprintf("garbage-%d", i)
		var r response
		if i%2 == 0 {
			r = f.postForm(f.policy, "token", exchangeForm(garbage), from("10.0.0.1"))
		} else {
			r = f.postForm(f.policy, "introspect", url.Values{"token": {"x"}}, http.Header{"Authorization": {"Bearer " + garbage},
				"X-Forwarded-For": {"10.0.0.1"}})
		}
		switch {
		case i < burst && i%2 == 0:
			expectError(t, r, http.StatusBadRequest, "invalid_request")
		case i < burst:
			expectError(t, r, http.StatusUnauthorized, "invalid_token")
		default:
			expectThrottled(t, r)
		}
	}
	if got := counted.reviews.Load(); got != int64(burst) {
		t.Errorf("got %d reviews for 100 garbage tokens; want %d (the burst)", got, burst)
	}
	if r := f.postForm(f.policy, "token", exchangeForm(good), from("10.0.0.1")); r.status != http.StatusOK {
		t.Errorf("a token remembered as good, from the throttled address: got %d %s; want 200", r.status, r.body)
	}
	expectThrottled(t, f.postForm(f.policy, "token", exchangeForm(saToken("batch", "nightly", f.policy.Issuer)), from("10.0.0.1")))
	if r := f.postForm(f.policy, "token", exchangeForm(saToken("batch", "nightly", f.policy.Issuer)), from("10.0.0.2")); r.status != http.StatusOK {
		t.Errorf("another address: got %d %s; want 200", r.status, r.body)
	}
	if r := f.postForm(f.policy, "introspect", url.Values{"token": {"x"}}, http.Header{
		"Authorization": {"Bearer " + saToken("apps", "api", f.policy.Issuer)}, "X-Forwarded-For": {"10.0.0.3"}}); r.status != http.StatusOK {
		t.Errorf("an introspection caller from another address: got %d %s; want 200", r.status, r.body)
	}
}

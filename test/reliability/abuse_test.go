package reliability

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenwarden/tokenwarden/internal/testenv"
	"github.com/tokenwarden/tokenwarden/issuer"
)

// TestHonestClientsAreNeverThrottled: with the default limits (5 failures a second, a burst of 10, per
// address), 200 correct password logins and 200 token exchanges from one address, over 10 seconds of the
// replica's clock and four at a time, all succeed: correct attempts cost nothing. A limit that counted them
// would let about 60 through.
func TestHonestClientsAreNeverThrottled(t *testing.T) {
	f := newFixture(t, fixtureOptions{replicas: 1, replica: replicaOptions{defaultLimits: true}})
	subjectToken := f.saToken("app")
	const n, workers = 200, 4
	step := 10 * time.Second / (2 * n)
	users := []string{"alice", "bob", "carol"}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		refused []string
	)
	next := make(chan int)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := range next {
				var r response
				var err error
				if i%2 == 0 {
					r, err = f.tryLogin(0, users[i/2%len(users)])
				} else {
					r, err = postForm(f.url(0, "token"), url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
						"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "subject_token": {subjectToken}}, nil)
				}
				f.clock.Step(step) // the 400 attempts span 10 s of the replica's clock
				if err != nil || r.status != http.StatusOK {
					mu.Lock()
					refused = append(refused, fmt.Sprintf("attempt %d: %v %v", i, r, err))
					mu.Unlock()
				}
			}
		})
	}
	for i := range 2 * n {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Logf("%d logins and %d exchanges from one address in %s (%s of the replica's clock)", n, n, time.Since(start).Round(time.Millisecond), 2*n*step)
	if len(refused) > 0 {
		t.Fatalf("%d of %d correct attempts refused; want none. First: %s", len(refused), 2*n, refused[0])
	}
}

// apiServerTokenReviews is the number of TokenReview requests the API server has served, from its own
// apiserver_request_total metric.
func apiServerTokenReviews(t testing.TB) float64 {
	t.Helper()
	raw, err := clientset.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	must(t, err)
	var sum float64
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `resource="tokenreviews"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		must(t, err)
		sum += v
	}
	return sum
}

// TestGarbageIntrospectionBearersCauseBoundedTokenReviews: 1,000 introspection calls from one address,
// each with another random bearer token, cost the API server at most the address's burst of TokenReviews
// (the replica's clock does not move, so its bucket does not refill), counted by the API server itself; the
// rest are 429 slow_down with Retry-After.
func TestGarbageIntrospectionBearersCauseBoundedTokenReviews(t *testing.T) {
	f := newFixture(t, fixtureOptions{replicas: 1, replica: replicaOptions{defaultLimits: true}})
	at := f.login(0, "alice").str("access_token")
	// The reviews a legitimate caller costs are not what is measured: one, then remembered.
	if r, err := f.tryIntrospect(0, at); err != nil || r.json["active"] != true {
		t.Fatalf("introspection by the listed caller: %v %v; want active", r, err)
	}
	before := apiServerTokenReviews(t)
	const n = 1000
	answers := map[int]int{}
	for range n {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		r, err := postForm(f.url(0, "introspect"), url.Values{"token": {at}},
			http.Header{"Authorization": {"Bearer " + base64.RawURLEncoding.EncodeToString(b)}})
		must(t, err)
		answers[r.status]++
		if r.status == http.StatusTooManyRequests && (r.str("error") != "slow_down" || r.header.Get("Retry-After") == "") {
			t.Fatalf("a throttled caller: %v, Retry-After %q; want slow_down with Retry-After", r, r.header.Get("Retry-After"))
		}
	}
	reviews := apiServerTokenReviews(t) - before
	t.Logf("%d garbage bearers: answers %v; %v TokenReviews on the API server", n, answers, reviews)
	if burst := issuer.DefaultIPRate.Burst; reviews > float64(burst) || answers[http.StatusUnauthorized] != burst ||
		answers[http.StatusTooManyRequests] != n-burst {
		t.Fatalf("got %v TokenReviews and answers %v; want at most %d reviews, %d answers 401 and the rest 429", reviews, answers, burst, burst)
	}
}

// TestIntrospectionFailsClosedWhileABaseIsMissing deletes every revocation base of a policy behind the
// issuer's back: introspection of a session logged out (its record in the journal) and of an active one
// answers 503 temporarily_unavailable with Retry-After, never active, until the controller creates the
// bases again (a manual reconciler here, so the test decides when); then the answers are the true ones.
func TestIntrospectionFailsClosedWhileABaseIsMissing(t *testing.T) {
	f := newFixture(t, fixtureOptions{replicas: 2, manual: true})
	ctx := context.Background()
	active, out := f.login(0, "alice"), f.login(1, "bob")
	if r, err := f.tryLogout(0, out.str("refresh_token")); err != nil || r.status != http.StatusOK {
		t.Fatalf("logout: %v %v", r, err)
	}
	f.eventuallyInactive(out.str("access_token"))

	p := f.getPolicy()
	if len(p.Status.Shards) == 0 {
		t.Fatal("the policy's status names no shard")
	}
	for _, sh := range p.Status.Shards {
		must(t, env.Client.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: p.Status.IssuerNamespace, Name: sh.Name}}))
	}
	tokens := map[string]string{"the active access token": active.str("access_token"), "the active refresh token": active.str("refresh_token"),
		"the logged-out access token": out.str("access_token")}
	unavailable := func(i int, what string) (bool, string) {
		r, err := f.tryIntrospect(i, tokens[what])
		if err != nil {
			return false, err.Error()
		}
		if r.json["active"] == true && strings.HasPrefix(what, "the logged-out") {
			t.Fatalf("replica %d: %s is active while the bases are missing: %v", i, what, r)
		}
		return r.errorIs(http.StatusServiceUnavailable, "temporarily_unavailable") && r.header.Get("Retry-After") != "",
			fmt.Sprintf("replica %d, %s: %v", i, what, r)
	}
	for i := range f.count() {
		for what := range tokens {
			testenv.Eventually(t, 30*time.Second, func() (bool, string) { return unavailable(i, what) })
		}
	}
	// And it stays so, while nothing recreates the bases.
	for range 10 {
		for i := range f.count() {
			for what := range tokens {
				if ok, why := unavailable(i, what); !ok {
					t.Fatalf("with the bases still missing: %s; want 503", why)
				}
			}
		}
	}
	if r := f.refresh(0, active.str("refresh_token")); !r.errorIs(http.StatusServiceUnavailable, "temporarily_unavailable") {
		t.Fatalf("a refresh with the bases missing: %v; want 503", r)
	}

	f.reconcile() // the controller creates the missing bases
	f.eventuallyInactive(out.str("access_token"))
	for i := range f.count() {
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			r, err := f.tryIntrospect(i, active.str("access_token"))
			if err != nil {
				return false, err.Error()
			}
			return r.status == http.StatusOK && r.json["active"] == true, fmt.Sprintf("replica %d: %v", i, r)
		})
	}
	if r := f.refresh(1, active.str("refresh_token")); r.status != http.StatusOK {
		t.Fatalf("a refresh once the bases are back: %v; want 200", r)
	}
}

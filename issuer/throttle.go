package issuer

import (
	"context"
	"math"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
)

// RateLimit is a token bucket of failed attempts: Burst failures at once, refilled at PerSecond.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

// Default limits on failed attempts. Successful ones cost nothing, so these bound guessing only: per client
// address, failed passwords and ServiceAccount tokens (token exchange, introspection callers), generous
// enough for a NAT of users who mistype; per username, failed passwords, tight enough that guessing one
// account's password is slow.
var (
	DefaultIPRate       = RateLimit{PerSecond: 5, Burst: 10}
	DefaultUsernameRate = RateLimit{PerSecond: 1, Burst: 5}
)

// DefaultThrottleKeys bounds how many client addresses (or usernames) are tracked at once.
const DefaultThrottleKeys = 100_000

// maxQueueWait bounds how long an attempt waits for the attempts of its key in flight to end (see admit).
const maxQueueWait = 10 * time.Second

// throttle limits the failed attempts per key with one token bucket each, read at the injected clock's
// time. An attempt is admitted before the work that decides it (a bcrypt comparison, a TokenReview) and
// ended after: a failure takes a token, a success gives back its place and takes nothing. So that a burst
// of parallel attempts cannot all be admitted before the first of them fails, no more attempts of a key
// are in flight at once than it has failures left; one more waits until one of them ends. Honest clients,
// whose attempts succeed, are therefore never refused, only made to wait behind their own attempts in
// flight when they send more at once than the burst.
//
// Keys whose bucket is full and that have nothing in flight are forgotten (at once after a success, by a
// sweep at most once a second otherwise), so memory follows the keys that failed in the last few
// seconds, up to max.
type throttle struct {
	limit rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

// bucket is what a throttle holds for one key.
type bucket struct {
	failures *rate.Limiter // a token per failure the key may still have
	inflight int           // attempts admitted and not ended: each may yet fail
	waiting  int           // attempts waiting for one in flight to end
	ended    chan struct{} // closed when an attempt ends; nil while none waits
}

// ticket is an admitted attempt. End it exactly once.
type ticket struct {
	t   *throttle
	key string
	b   *bucket
}

func newThrottle(l RateLimit, maxKeys int) *throttle {
	return &throttle{limit: rate.Limit(l.PerSecond), burst: l.Burst, max: maxKeys, buckets: map[string]*bucket{}}
}

// admit admits one attempt for key. It returns the attempt's ticket, or how long until the key may try
// again: when it has no failure left, when more keys are tracked than max (for up to a second), or when
// ctx ends (or maxQueueWait passes) while it waits for an attempt in flight to end.
func (t *throttle) admit(ctx context.Context, key string, clk clock.PassiveClock) (*ticket, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buckets[key]
	if b == nil {
		now := clk.Now()
		t.sweep(now)
		if len(t.buckets) >= t.max {
			// More distinct keys failed in the last few seconds than we track: fail closed rather than grow
			// without bound or forget a bucket that is still counting.
			return nil, time.Second
		}
		b = &bucket{failures: rate.NewLimiter(t.limit, t.burst)}
		t.buckets[key] = b
	}
	var giveUp <-chan struct{} // closed when the request ends or maxQueueWait has passed
	for {
		now := clk.Now()
		left := b.failures.TokensAt(now)
		if left < 1 {
			// Nothing is in flight here: admitted attempts never outnumber the failures left.
			return nil, time.Duration(math.Ceil((1 - left) / float64(t.limit) * float64(time.Second)))
		}
		if float64(b.inflight+1) <= left {
			b.inflight++
			return &ticket{t: t, key: key, b: b}, 0
		}
		// Every failure left is spoken for by an attempt in flight: wait for one to end.
		if giveUp == nil {
			waitCtx, cancel := context.WithTimeout(ctx, maxQueueWait)
			defer cancel()
			giveUp = waitCtx.Done()
		}
		if b.ended == nil {
			b.ended = make(chan struct{})
		}
		ended := b.ended
		b.waiting++
		t.mu.Unlock()
		gaveUp := false
		select {
		case <-ended:
		case <-giveUp:
			gaveUp = true
		}
		t.mu.Lock()
		b.waiting--
		if gaveUp {
			t.forget(key, b, clk.Now())
			return nil, time.Second
		}
	}
}

// end ends an admitted attempt at now: a failure takes one of the key's failures, a success nothing.
func (k *ticket) end(failed bool, now time.Time) {
	t, b := k.t, k.b
	t.mu.Lock()
	defer t.mu.Unlock()
	b.inflight--
	if failed {
		// admit kept the attempts in flight below the failures left, so this never goes below zero.
		b.failures.ReserveN(now, 1)
	}
	if b.ended != nil {
		close(b.ended)
		b.ended = nil
	}
	t.forget(k.key, b, now)
}

// forget drops key's bucket when it is the same as a new one: full, nothing in flight, nobody waiting.
func (t *throttle) forget(key string, b *bucket, now time.Time) {
	if b.inflight == 0 && b.waiting == 0 && b.failures.TokensAt(now) >= float64(t.burst) && t.buckets[key] == b {
		delete(t.buckets, key)
	}
}

// sweep forgets the buckets that are the same as new ones. It runs at most once a second, so that a flood
// of new keys cannot make every attempt walk the map.
func (t *throttle) sweep(now time.Time) {
	if now.Sub(t.swept) < time.Second && !now.Before(t.swept) {
		return
	}
	t.swept = now
	for k, b := range t.buckets {
		t.forget(k, b, now)
	}
}

// tracked is the number of keys the throttle holds.
func (t *throttle) tracked() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.buckets)
}

// admit admits an attempt of the request's client on t for key, or refuses it with 429 slow_down and
// when to come back.
func (s *Server) admit(r *http.Request, t *throttle, key string) (*ticket, *apiError) {
	tk, wait := t.admit(r.Context(), key, s.clock)
	if tk != nil {
		return tk, nil
	}
	e := newError(http.StatusTooManyRequests, errSlowDown, "too many failed attempts; retry later")
	e.retryAfter = wait
	return nil, e
}

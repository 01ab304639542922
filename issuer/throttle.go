package issuer

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit is a token bucket: Burst attempts at once, refilled at PerSecond.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

// Default password-attempt limits: per client IP generous enough for a NAT of users, per username tight
// enough that guessing one account's password is slow.
var (
	DefaultIPRate       = RateLimit{PerSecond: 5, Burst: 10}
	DefaultUsernameRate = RateLimit{PerSecond: 1, Burst: 5}
)

// DefaultThrottleKeys bounds how many clients (or usernames) are tracked at once.
const DefaultThrottleKeys = 100_000

// throttle limits attempts per key with one token bucket each, read at the injected clock's time. Buckets
// that have refilled are forgotten, so memory follows the keys active in the last few seconds, up to max.
type throttle struct {
	limit rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	swept   time.Time
}

func newThrottle(l RateLimit, maxKeys int) *throttle {
	return &throttle{limit: rate.Limit(l.PerSecond), burst: l.Burst, max: maxKeys, buckets: map[string]*rate.Limiter{}}
}

// admit takes one attempt for key at now. It returns 0 when the attempt may go ahead, or how long until
// one may; a refused attempt uses up nothing.
func (t *throttle) admit(key string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.buckets[key]
	if !ok {
		if len(t.buckets) >= t.max {
			t.sweep(now)
		}
		if len(t.buckets) >= t.max {
			// More distinct keys in the last few seconds than we track: fail closed rather than grow
			// without bound or forget a bucket that is still counting.
			return time.Second
		}
		l = rate.NewLimiter(t.limit, t.burst)
		t.buckets[key] = l
	}
	r := l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// sweep forgets the buckets that are full again, which are the same as new ones. It runs at most once a
// second, so that a flood of new keys cannot make every attempt walk the map.
func (t *throttle) sweep(now time.Time) {
	if now.Sub(t.swept) < time.Second {
		return
	}
	t.swept = now
	for k, l := range t.buckets {
		if l.TokensAt(now) >= float64(t.burst) {
			delete(t.buckets, k)
		}
	}
}

// remoteIP is the default client address: the peer of the connection. Behind a proxy that is the proxy;
// set ServerConfig.ClientIP to read a header the proxy sets, and only one it overwrites.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

package issuer

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/utils/clock"
)

// DefaultReviewTTL is how long a successful ServiceAccount token review is reused: as long as the
// Kubernetes API server caches its own token authentication, so the answer is no staler than the API
// server's would be.
const DefaultReviewTTL = 10 * time.Second

// DefaultFailedReviewTTL is how long a failed review is remembered: a token refused now is refused for that
// long without asking again. A ServiceAccount token does not become valid later (one issued a moment ahead
// of the API server's clock aside, which a retry after this long gets through).
const DefaultFailedReviewTTL = 10 * time.Second

// DefaultReviewCacheSize is how many successful reviews, and how many failed ones, are remembered at most.
const DefaultReviewCacheSize = 10_000

// CachingAuthenticator remembers the reviews of Next: a success for TTL, so that an introspecting resource
// server costs the API server one TokenReview per token per TTL rather than one per request, and a refusal
// for FailureTTL, so that a token presented again and again costs one. A review that could not be made
// (ErrAuthenticatorUnavailable) is never remembered. Successes and failures are kept apart, each in a
// least-recently-used cache of MaxSize entries, so that a flood of garbage evicts only garbage. Tokens are
// kept as SHA-256 digests only.
type CachingAuthenticator struct {
	Next Authenticator
	// TTL and FailureTTL are how long successes and failures are remembered; 0 means DefaultReviewTTL and
	// DefaultFailedReviewTTL.
	TTL, FailureTTL time.Duration
	// Clock is what entries expire by; nil means the real clock.
	Clock clock.PassiveClock
	// MaxSize bounds the successes, and the failures, remembered; 0 means DefaultReviewCacheSize.
	MaxSize int

	once                sync.Once
	successes, failures *utilcache.LRUExpireCache // digest -> ServiceAccount, digest -> error
}

var _ Authenticator = (*CachingAuthenticator)(nil)

// rememberer is an Authenticator that can say, without reviewing, that it has found a token good.
type rememberer interface {
	Remembered(token, audience string) (ServiceAccount, bool)
}

var _ rememberer = (*CachingAuthenticator)(nil)

func (c *CachingAuthenticator) init() {
	c.once.Do(func() {
		if c.TTL == 0 {
			c.TTL = DefaultReviewTTL
		}
		if c.FailureTTL == 0 {
			c.FailureTTL = DefaultFailedReviewTTL
		}
		if c.MaxSize <= 0 {
			c.MaxSize = DefaultReviewCacheSize
		}
		var clk utilcache.Clock = clock.RealClock{}
		if c.Clock != nil {
			clk = c.Clock
		}
		c.successes = utilcache.NewLRUExpireCacheWithClock(c.MaxSize, clk)
		c.failures = utilcache.NewLRUExpireCacheWithClock(c.MaxSize, clk)
	})
}

func digest(token, audience string) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(audience))
	h.Write([]byte{0})
	h.Write([]byte(token))
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// Remembered returns the ServiceAccount of a successful review of token for audience that has not expired.
func (c *CachingAuthenticator) Remembered(token, audience string) (ServiceAccount, bool) {
	c.init()
	if v, ok := c.successes.Get(digest(token, audience)); ok {
		return v.(ServiceAccount), true
	}
	return ServiceAccount{}, false
}

// Authenticate implements Authenticator.
func (c *CachingAuthenticator) Authenticate(ctx context.Context, token, audience string) (ServiceAccount, error) {
	c.init()
	key := digest(token, audience)
	if v, ok := c.successes.Get(key); ok {
		return v.(ServiceAccount), nil
	}
	if v, ok := c.failures.Get(key); ok {
		return ServiceAccount{}, v.(error)
	}
	sa, err := c.Next.Authenticate(ctx, token, audience)
	switch {
	case errors.Is(err, ErrAuthenticatorUnavailable):
	case err != nil:
		c.failures.Add(key, err, c.FailureTTL)
	default:
		c.successes.Add(key, sa, c.TTL)
	}
	return sa, err
}

// remembered is how many successes and failures c holds that have not expired.
func (c *CachingAuthenticator) remembered() (successes, failures int) {
	c.init()
	return len(c.successes.Keys()), len(c.failures.Keys())
}

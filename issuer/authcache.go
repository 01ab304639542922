package issuer

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// DefaultReviewTTL is how long a successful ServiceAccount token review is reused: as long as the
// Kubernetes API server caches its own token authentication, so the answer is no staler than the API
// server's would be.
const DefaultReviewTTL = 10 * time.Second

// CachingAuthenticator remembers successful reviews of Next for TTL, so that an introspecting resource
// server costs the API server one TokenReview per token per TTL rather than one per request. Failures are
// never remembered. Tokens are kept as SHA-256 digests only.
type CachingAuthenticator struct {
	Next    Authenticator
	TTL     time.Duration
	Clock   clock.PassiveClock
	MaxSize int // entries kept at most; when full, expired entries go first, then everything

	mu      sync.Mutex
	entries map[[sha256.Size]byte]review
}

type review struct {
	sa      ServiceAccount
	expires time.Time
}

var _ Authenticator = (*CachingAuthenticator)(nil)

// Authenticate implements Authenticator.
func (c *CachingAuthenticator) Authenticate(ctx context.Context, token, audience string) (ServiceAccount, error) {
	key := sha256.Sum256([]byte(audience + "\x00" + token))
	now := c.Clock.Now()
	c.mu.Lock()
	if r, ok := c.entries[key]; ok && now.Before(r.expires) {
		c.mu.Unlock()
		return r.sa, nil
	}
	c.mu.Unlock()

	sa, err := c.Next.Authenticate(ctx, token, audience)
	if err != nil {
		return ServiceAccount{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[[sha256.Size]byte]review{}
	}
	if len(c.entries) >= c.MaxSize {
		for k, r := range c.entries {
			if !now.Before(r.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= c.MaxSize {
			clear(c.entries)
		}
	}
	c.entries[key] = review{sa: sa, expires: now.Add(c.TTL)}
	return sa, nil
}

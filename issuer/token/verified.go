package token

import (
	"crypto/sha256"
	"sync"
)

// verifiedCacheSize bounds the access tokens a codec remembers as verified.
const verifiedCacheSize = 16384

// verifiedCache remembers the claims of access tokens whose signature and claims verified, keyed by the
// SHA-256 of the token (the token itself is not kept). An entry says only "these exact bytes verified with
// this codec's keys"; times are checked again on every use, and a codec (with its cache) is replaced
// whenever the policy or its keys change. When full it starts afresh.
type verifiedCache struct {
	mu      sync.RWMutex
	max     int
	entries map[[sha256.Size]byte]*AccessClaims
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, entries: make(map[[sha256.Size]byte]*AccessClaims)}
}

func (v *verifiedCache) get(raw string) (*AccessClaims, bool) {
	if len(raw) > MaxTokenSize {
		return nil, false
	}
	key := sha256.Sum256([]byte(raw))
	v.mu.RLock()
	defer v.mu.RUnlock()
	c, ok := v.entries[key]
	return c, ok
}

func (v *verifiedCache) put(raw string, c *AccessClaims) {
	key := sha256.Sum256([]byte(raw))
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.entries) >= v.max {
		clear(v.entries)
	}
	v.entries[key] = c
}

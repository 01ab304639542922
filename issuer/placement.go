package issuer

import (
	"math/rand/v2"
	"time"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// placement is where the records of session sid live: its policy and the shard the session was placed in
// at login, which its id carries (revocation.NewSessionID). ok is false for an id without a shard.
func placement(p *Policy, sid string) (revocation.Place, bool) {
	shard, ok := revocation.ShardOfSession(sid)
	return revocation.Place{Policy: p.Key, Shard: shard}, ok
}

// newSessionID places a new session in one of the policy's shards, chosen at random so that sessions
// spread evenly whatever their subjects.
func newSessionID(p *Policy) string {
	return revocation.NewSessionID(rand.IntN(shardCount(p.Spec())))
}

// Spec values the API server defaults; a Policy built in code may lack them, so the same defaults apply.
const (
	defaultShards          = 4
	defaultRefreshLifetime = 168 * time.Hour
)

func shardCount(spec *v1alpha1.TokenPolicySpec) int {
	if spec.Revocation.Shards < 1 {
		return defaultShards
	}
	return int(spec.Revocation.Shards)
}

// refreshLifetime is how long a session lasts from login.
func refreshLifetime(spec *v1alpha1.TokenPolicySpec) time.Duration {
	if spec.RefreshToken.Lifetime.Duration <= 0 {
		return defaultRefreshLifetime
	}
	return spec.RefreshToken.Lifetime.Duration
}

// idleTimeout is how long a session may go without a refresh; 0 means no limit.
func idleTimeout(spec *v1alpha1.TokenPolicySpec) time.Duration {
	if spec.RefreshToken.IdleTimeout == nil {
		return 0
	}
	return spec.RefreshToken.IdleTimeout.Duration
}

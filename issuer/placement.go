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
	return revocation.Place{Policy: p.State, Shard: shard}, ok
}

// shardRoom is implemented by stores that can tell, without blocking, whether a shard has room for new
// sessions (configmap.Store).
type shardRoom interface {
	HasRoom(place revocation.Place) bool
}

// newSessionID places a new session in one of the policy's shards, chosen at random so that sessions
// spread evenly whatever their subjects: among the shards the store says have room, or among all when it
// cannot tell or none has. A session's records never leave its shard, so a shard near its budget is
// relieved, once the shard count is raised, only by placing new sessions elsewhere.
func (s *Server) newSessionID(p *Policy) string {
	n := shardCount(p.Spec())
	if r, ok := s.store.(shardRoom); ok {
		room := make([]int, 0, n)
		for i := range n {
			if r.HasRoom(revocation.Place{Policy: p.State, Shard: i}) {
				room = append(room, i)
			}
		}
		if len(room) > 0 {
			return revocation.NewSessionID(room[rand.IntN(len(room))])
		}
	}
	return revocation.NewSessionID(rand.IntN(n))
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

package revocation

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Memory is a Store that keeps everything in one process's memory, for tests and for a single-replica
// issuer without durability. It applies the same rules as every other Store.
type Memory struct {
	mu       sync.Mutex
	sessions map[types.NamespacedName]map[string]Session
	subjects map[types.NamespacedName]map[string]Subject
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory Store.
func NewMemory() *Memory {
	return &Memory{sessions: map[types.NamespacedName]map[string]Session{}, subjects: map[types.NamespacedName]map[string]Subject{}}
}

func (m *Memory) session(p types.NamespacedName, sid string) *Session {
	if s, ok := m.sessions[p][sid]; ok {
		return &s
	}
	return nil
}

func (m *Memory) revokedBefore(p types.NamespacedName, subject string) time.Time {
	return m.subjects[p][subject].RevokedBefore
}

func (m *Memory) putSession(p types.NamespacedName, sid string, s *Session) {
	if m.sessions[p] == nil {
		m.sessions[p] = map[string]Session{}
	}
	m.sessions[p][sid] = *s
}

// Refresh applies DecideRefresh.
func (m *Memory) Refresh(ctx context.Context, req RefreshRequest) (RefreshResult, error) {
	if err := ctx.Err(); err != nil {
		return RefreshResult{}, ErrUnavailable
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	next, res, err := DecideRefresh(m.session(req.Policy, req.SessionID), m.revokedBefore(req.Policy, req.Subject), req)
	if next != nil {
		m.putSession(req.Policy, req.SessionID, next)
	}
	return res, err
}

// RevokeSession applies DecideRevokeSession.
func (m *Memory) RevokeSession(ctx context.Context, req RevokeSessionRequest) error {
	if err := ctx.Err(); err != nil {
		return ErrUnavailable
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if next := DecideRevokeSession(m.session(req.Policy, req.SessionID), req); next != nil {
		m.putSession(req.Policy, req.SessionID, next)
	}
	return nil
}

// RevokeSubject applies DecideRevokeSubject.
func (m *Memory) RevokeSubject(ctx context.Context, req RevokeSubjectRequest) error {
	if err := ctx.Err(); err != nil {
		return ErrUnavailable
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var cur *Subject
	if s, ok := m.subjects[req.Policy][req.Subject]; ok {
		cur = &s
	}
	if next := DecideRevokeSubject(cur, req); next != nil {
		if m.subjects[req.Policy] == nil {
			m.subjects[req.Policy] = map[string]Subject{}
		}
		m.subjects[req.Policy][req.Subject] = *next
	}
	return nil
}

// Valid applies CheckValid. It never answers ErrUnavailable: a Memory store holds all of its state.
func (m *Memory) Valid(policy types.NamespacedName, sid, subject string, authTime time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return CheckValid(m.session(policy, sid), m.revokedBefore(policy, subject), authTime)
}

// Current applies IsCurrent. A Memory store always holds all of its state, so it can always tell.
func (m *Memory) Current(policy types.NamespacedName, sid string, gen uint64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return IsCurrent(m.session(policy, sid), gen), nil
}

package configmap

import (
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// index is what this replica has observed of every policy's shards (bases and journals), kept current by
// an informer: the records by session id and subject, and the newest copy of each object to start a write
// from. Updates decode only the entries that changed, so a busy journal costs what changed, and a base
// (rewritten only by folds) costs nothing between folds.
type index struct {
	mu       sync.RWMutex
	shards   map[types.NamespacedName]*corev1.ConfigMap               // by object: bases and journals
	sessions map[types.NamespacedName]map[string]*sessionParts        // by policy, then session id
	subjects map[types.NamespacedName]map[string]map[string]time.Time // by policy, subject, then object name
}

// sessionParts is a session's record as its shard's base and its journal hold it; the journal's is the
// newer unless a fold is under way, and Newer decides between them either way.
type sessionParts struct {
	base, journal string
}

func (p *sessionParts) merged() (revocation.Session, bool) {
	v := revocation.Newer("s.", p.base, p.journal)
	s, err := revocation.DecodeSession(v)
	return s, err == nil
}

var _ toolscache.ResourceEventHandler = (*index)(nil)

func newIndex() *index {
	return &index{
		shards:   map[types.NamespacedName]*corev1.ConfigMap{},
		sessions: map[types.NamespacedName]map[string]*sessionParts{},
		subjects: map[types.NamespacedName]map[string]map[string]time.Time{},
	}
}

func policyOf(cm *corev1.ConfigMap) (types.NamespacedName, bool) {
	name := cm.Labels[v1alpha1.LabelPolicy]
	return types.NamespacedName{Namespace: cm.Namespace, Name: name}, name != "" && cm.Labels[v1alpha1.LabelComponent] == v1alpha1.ComponentRevocations
}

// OnAdd, OnUpdate and OnDelete take the informer's events.
func (x *index) OnAdd(obj any, _ bool) { x.apply(nil, asConfigMap(obj)) }

// OnUpdate indexes what changed between old and new.
func (x *index) OnUpdate(old, new any) { x.apply(asConfigMap(old), asConfigMap(new)) }

// OnDelete forgets a shard's records.
func (x *index) OnDelete(obj any) {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if cm := asConfigMap(obj); cm != nil {
		x.mu.Lock()
		defer x.mu.Unlock()
		key := types.NamespacedName{Namespace: cm.Namespace, Name: cm.Name}
		if held := x.shards[key]; held != nil {
			if policy, ok := policyOf(held); ok {
				x.diffLocked(policy, cm.Name, held.Data, nil)
			}
		}
		delete(x.shards, key)
	}
}

func asConfigMap(obj any) *corev1.ConfigMap {
	cm, _ := obj.(*corev1.ConfigMap)
	return cm
}

func (x *index) apply(old, cur *corev1.ConfigMap) {
	if cur == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.storeLocked(cur)
}

// observe records an object this replica wrote itself, so that its own reads see the write before the
// watch delivers it.
func (x *index) observe(cm *corev1.ConfigMap) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.storeLocked(cm)
}

// storeLocked makes cur the shard's indexed version unless the index already holds a newer one. The
// resourceVersions of one object come from etcd's revision and grow with every write; comparing them is
// what keeps a watch event that is older than this replica's own write from rolling the index back.
func (x *index) storeLocked(cur *corev1.ConfigMap) {
	key := types.NamespacedName{Namespace: cur.Namespace, Name: cur.Name}
	held := x.shards[key]
	if held != nil && !newer(cur.ResourceVersion, held.ResourceVersion) {
		return
	}
	policy, ok := policyOf(cur)
	if !ok {
		return
	}
	var oldData map[string]string
	if held != nil {
		oldData = held.Data
	}
	x.shards[key] = cur
	x.diffLocked(policy, cur.Name, oldData, cur.Data)
}

// newer reports whether resourceVersion a is later than b; unparseable versions count as newer, so an
// API server with opaque versions still gets every event applied.
func newer(a, b string) bool {
	av, errA := strconv.ParseUint(a, 10, 64)
	bv, errB := strconv.ParseUint(b, 10, 64)
	if errA != nil || errB != nil {
		return a != b
	}
	return av > bv
}

// diffLocked indexes the entries that differ between oldData and newData.
func (x *index) diffLocked(policy types.NamespacedName, shard string, oldData, newData map[string]string) {
	for k, v := range newData {
		if ov, ok := oldData[k]; ok && ov == v {
			continue
		}
		x.setLocked(policy, shard, k, v)
	}
	for k, v := range oldData {
		if _, ok := newData[k]; !ok {
			x.unsetLocked(policy, shard, k, v)
		}
	}
}

func (x *index) setLocked(policy types.NamespacedName, shard, key, value string) {
	switch {
	case revocation.IsSessionKey(key):
		if x.sessions[policy] == nil {
			x.sessions[policy] = map[string]*sessionParts{}
		}
		sid := strings.TrimPrefix(key, "s.")
		p := x.sessions[policy][sid]
		if p == nil {
			p = &sessionParts{}
			x.sessions[policy][sid] = p
		}
		if strings.HasSuffix(shard, revocation.JournalSuffix) {
			p.journal = value
		} else {
			p.base = value
		}
	case revocation.IsSubjectKey(key):
		s, err := revocation.DecodeSubject(value)
		if err != nil {
			return
		}
		if x.subjects[policy] == nil {
			x.subjects[policy] = map[string]map[string]time.Time{}
		}
		if x.subjects[policy][s.Subject] == nil {
			x.subjects[policy][s.Subject] = map[string]time.Time{}
		}
		x.subjects[policy][s.Subject][shard] = s.RevokedBefore
	}
}

func (x *index) unsetLocked(policy types.NamespacedName, shard, key, value string) {
	switch {
	case revocation.IsSessionKey(key):
		sid := strings.TrimPrefix(key, "s.")
		p := x.sessions[policy][sid]
		if p == nil {
			return
		}
		if strings.HasSuffix(shard, revocation.JournalSuffix) {
			p.journal = ""
		} else {
			p.base = ""
		}
		if p.base == "" && p.journal == "" {
			delete(x.sessions[policy], sid)
		}
	case revocation.IsSubjectKey(key):
		if s, err := revocation.DecodeSubject(value); err == nil {
			delete(x.subjects[policy][s.Subject], shard)
			if len(x.subjects[policy][s.Subject]) == 0 {
				delete(x.subjects[policy], s.Subject)
			}
		}
	}
}

// object is the newest copy of a shard this replica holds, or nil. Callers must not modify it.
func (x *index) object(key types.NamespacedName) *corev1.ConfigMap {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.shards[key]
}

func (x *index) session(policy types.NamespacedName, sid string) *revocation.Session {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if p, ok := x.sessions[policy][sid]; ok {
		if s, ok := p.merged(); ok {
			return &s
		}
	}
	return nil
}

// revokedBefore is the latest subject-wide mark for subject in any of the policy's shards.
func (x *index) revokedBefore(policy types.NamespacedName, subject string) time.Time {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var latest time.Time
	for _, t := range x.subjects[policy][subject] {
		if t.After(latest) {
			latest = t
		}
	}
	return latest
}

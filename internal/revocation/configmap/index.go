package configmap

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// index is what this replica has observed of every policy's revocation objects (bases, journal, sealed
// segments), kept current by an informer: the records by session id and subject, the bytes each shard has
// pending outside its base, and the newest copy of each object to start a write from. Updates decode only
// the entries that changed, so a busy journal costs what changed, a segment is read once, and a base
// (rewritten only when segments are merged into it) costs nothing in between.
type index struct {
	mu       sync.RWMutex
	objects  map[types.NamespacedName]*corev1.ConfigMap               // by object
	sessions map[types.NamespacedName]map[string]*sessionParts        // by policy, then session id: outside the bases
	subjects map[types.NamespacedName]map[string]map[string]time.Time // by policy, subject, then object name
	pending  map[types.NamespacedName]map[int]int                     // by policy, then shard: bytes in the journal and segments
	bases    map[types.NamespacedName]map[int]*corev1.ConfigMap       // by policy, then shard: the objects' bases
	sealed   map[types.NamespacedName]map[uint64]bool                 // by policy: segments observed, or known never to have been written
	segments map[types.NamespacedName]int                             // by policy: bytes of the segments observed
	// badSubjects are the subject-wide entries that do not decode, by policy, entry key, then object name:
	// the subject they are for cannot be told valid while one is held.
	badSubjects map[types.NamespacedName]map[string]map[string]bool
}

// sessionParts is a session's record outside its shard's base: as the newest sealed segment holding it and
// the journal hold it. The base's copy is read from the base itself (most sessions have only that one, and
// indexing them all would cost memory in proportion to the sessions); revocation.Newer decides between the
// copies.
type sessionParts struct {
	segment, journal string
	segmentSeq       uint64
}

var _ toolscache.ResourceEventHandler = (*index)(nil)

func newIndex() *index {
	return &index{
		objects:  map[types.NamespacedName]*corev1.ConfigMap{},
		sessions: map[types.NamespacedName]map[string]*sessionParts{},
		subjects: map[types.NamespacedName]map[string]map[string]time.Time{},
		pending:  map[types.NamespacedName]map[int]int{},
		bases:    map[types.NamespacedName]map[int]*corev1.ConfigMap{},
		sealed:   map[types.NamespacedName]map[uint64]bool{},
		segments: map[types.NamespacedName]int{},

		badSubjects: map[types.NamespacedName]map[string]map[string]bool{},
	}
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
		if held := x.objects[key]; held != nil {
			if policy, ok := keyOf(held); ok {
				x.diffLocked(policy, cm.Name, held.Data, nil)
				switch role, n := revocation.RoleOf(policy.Name, cm.Name); role {
				case revocation.RoleBase:
					delete(x.bases[policy], int(n))
				case revocation.RoleSegment:
					delete(x.sealed[policy], n)
				}
			}
		}
		delete(x.objects, key)
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

// observe records an object this replica wrote or read itself, so that its own reads see it before the
// watch delivers it. The index keeps cm (without its managedFields, which name every key and are never
// read): the caller must not modify it afterwards.
func (x *index) observe(cm *corev1.ConfigMap) {
	cm.ManagedFields = nil
	x.mu.Lock()
	defer x.mu.Unlock()
	x.storeLocked(cm)
}

// storeLocked makes cur the shard's indexed version unless the index already holds a newer one. The
// resourceVersions of one object come from etcd's revision and grow with every write; comparing them is
// what keeps a watch event that is older than this replica's own write from rolling the index back.
func (x *index) storeLocked(cur *corev1.ConfigMap) {
	key := types.NamespacedName{Namespace: cur.Namespace, Name: cur.Name}
	held := x.objects[key]
	if held != nil && !newer(cur.ResourceVersion, held.ResourceVersion) {
		return
	}
	policy, ok := keyOf(cur)
	if !ok {
		return
	}
	var oldData map[string]string
	if held != nil {
		oldData = held.Data
	}
	x.objects[key] = cur
	switch role, n := revocation.RoleOf(policy.Name, cur.Name); role {
	case revocation.RoleBase:
		if x.bases[policy] == nil {
			x.bases[policy] = map[int]*corev1.ConfigMap{}
		}
		x.bases[policy][int(n)] = cur
	case revocation.RoleSegment:
		x.markSealedLocked(policy, n)
	}
	x.diffLocked(policy, cur.Name, oldData, cur.Data)
}

func (x *index) markSealedLocked(policy types.NamespacedName, seq uint64) {
	if x.sealed[policy] == nil {
		x.sealed[policy] = map[uint64]bool{}
	}
	x.sealed[policy][seq] = true
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

// diffLocked indexes the entries that differ between oldData and newData of object name.
func (x *index) diffLocked(policy types.NamespacedName, name string, oldData, newData map[string]string) {
	role, seq := revocation.RoleOf(policy.Name, name)
	if role == revocation.RoleNone {
		return
	}
	if role == revocation.RoleSegment {
		x.segments[policy] += dataSize(newData) - dataSize(oldData)
	}
	for k, v := range newData {
		ov, ok := oldData[k]
		if ok && ov == v {
			x.repointLocked(policy, role, seq, k, v)
			continue
		}
		if ok {
			x.countLocked(policy, role, k, len(v)-len(ov))
		} else {
			x.countLocked(policy, role, k, len(k)+len(v))
		}
		x.setLocked(policy, role, seq, name, k, v)
	}
	for k, v := range oldData {
		if _, ok := newData[k]; !ok {
			x.countLocked(policy, role, k, -len(k)-len(v))
			x.unsetLocked(policy, role, seq, name, k, v)
		}
	}
}

// repointLocked makes the index hold a value unchanged by a new version of its object as that version
// holds it: otherwise every rewrite of the journal would keep the old version's strings alive beside the
// new ones.
func (x *index) repointLocked(policy types.NamespacedName, role revocation.Role, seq uint64, key, value string) {
	sid, ok := strings.CutPrefix(key, "s.")
	if !ok {
		return
	}
	p := x.sessions[policy][sid]
	switch {
	case p == nil:
	case role == revocation.RoleJournal && p.journal == value:
		p.journal = value
	case role == revocation.RoleSegment && p.segmentSeq == seq && p.segment == value:
		p.segment = value
	}
}

// countLocked adds delta to the bytes a session's shard has pending outside its base.
func (x *index) countLocked(policy types.NamespacedName, role revocation.Role, key string, delta int) {
	if role == revocation.RoleBase || !revocation.IsSessionKey(key) {
		return
	}
	shard := revocation.SessionShard(strings.TrimPrefix(key, "s."))
	if x.pending[policy] == nil {
		x.pending[policy] = map[int]int{}
	}
	x.pending[policy][shard] += delta
}

func (x *index) setLocked(policy types.NamespacedName, role revocation.Role, seq uint64, name, key, value string) {
	switch {
	case revocation.IsSessionKey(key) && role != revocation.RoleBase:
		if x.sessions[policy] == nil {
			x.sessions[policy] = map[string]*sessionParts{}
		}
		sid := strings.TrimPrefix(key, "s.")
		p := x.sessions[policy][sid]
		if p == nil {
			p = &sessionParts{}
			x.sessions[policy][sid] = p
		}
		switch role {
		case revocation.RoleJournal:
			p.journal = value
		case revocation.RoleSegment:
			// Only the newest sealed value matters; an older segment's copy of it is superseded, and the
			// segment holding the newest is deleted only once every base has it.
			if p.segment == "" || revocation.Newer(key, p.segment, value) != p.segment {
				p.segment, p.segmentSeq = value, seq
			}
		}
	case revocation.IsSubjectKey(key):
		s, err := revocation.DecodeSubject(value)
		if err != nil {
			x.markBadSubjectLocked(policy, key, name, true)
			return
		}
		x.markBadSubjectLocked(policy, key, name, false)
		if x.subjects[policy] == nil {
			x.subjects[policy] = map[string]map[string]time.Time{}
		}
		if x.subjects[policy][s.Subject] == nil {
			x.subjects[policy][s.Subject] = map[string]time.Time{}
		}
		x.subjects[policy][s.Subject][name] = s.RevokedBefore
	}
}

func (x *index) unsetLocked(policy types.NamespacedName, role revocation.Role, seq uint64, name, key, value string) {
	switch {
	case revocation.IsSessionKey(key) && role != revocation.RoleBase:
		sid := strings.TrimPrefix(key, "s.")
		p := x.sessions[policy][sid]
		if p == nil {
			return
		}
		switch role {
		case revocation.RoleJournal:
			p.journal = ""
		case revocation.RoleSegment:
			if p.segmentSeq == seq {
				p.segment, p.segmentSeq = "", 0
			}
		}
		if p.journal == "" && p.segment == "" {
			delete(x.sessions[policy], sid)
		}
	case revocation.IsSubjectKey(key):
		x.markBadSubjectLocked(policy, key, name, false)
		if s, err := revocation.DecodeSubject(value); err == nil {
			delete(x.subjects[policy][s.Subject], name)
			if len(x.subjects[policy][s.Subject]) == 0 {
				delete(x.subjects[policy], s.Subject)
			}
		}
	}
}

// markBadSubjectLocked records whether object name holds an undecodable subject-wide entry under key.
func (x *index) markBadSubjectLocked(policy types.NamespacedName, key, name string, bad bool) {
	switch {
	case bad:
		if x.badSubjects[policy] == nil {
			x.badSubjects[policy] = map[string]map[string]bool{}
		}
		if x.badSubjects[policy][key] == nil {
			x.badSubjects[policy][key] = map[string]bool{}
		}
		x.badSubjects[policy][key][name] = true
	case x.badSubjects[policy][key] != nil:
		delete(x.badSubjects[policy][key], name)
		if len(x.badSubjects[policy][key]) == 0 {
			delete(x.badSubjects[policy], key)
		}
	}
}

// object is the newest copy of a shard this replica holds, or nil. Callers must not modify it.
func (x *index) object(key types.NamespacedName) *corev1.ConfigMap {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.objects[key]
}

// segmentValue is the newest value of a session's record among the sealed segments observed.
func (x *index) segmentValue(policy types.NamespacedName, sid string) string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if p, ok := x.sessions[policy][sid]; ok {
		return p.segment
	}
	return ""
}

// pendingBytes is what shard has outside its base, in the journal and segments observed.
func (x *index) pendingBytes(policy types.NamespacedName, shard int) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.pending[policy][shard]
}

// segmentBytes is the data of the policy's segments observed.
func (x *index) segmentBytes(policy types.NamespacedName) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.segments[policy]
}

// base is the newest copy of a shard's base this replica holds, or nil. Callers must not modify it.
func (x *index) base(policy types.NamespacedName, shard int) *corev1.ConfigMap {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.bases[policy][shard]
}

// unsealed lists the segments numbered from+1 to to that this replica has neither observed nor found never
// written.
func (x *index) unsealed(policy types.NamespacedName, from, to uint64) []uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []uint64
	for seq := from + 1; seq <= to; seq++ {
		if !x.sealed[policy][seq] {
			out = append(out, seq)
		}
	}
	return out
}

// hole records that segment seq of policy was never written (see Store.resolve).
func (x *index) hole(policy types.NamespacedName, seq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.markSealedLocked(policy, seq)
}

// session is the newest record of session sid this replica has observed (nil when it has none), or an
// error wrapping revocation.ErrUnavailable when what it has observed cannot tell: the base of the session's
// shard or the policy's journal is not observed (not synced yet, or deleted), or the record does not decode.
func (x *index) session(policy types.NamespacedName, sid string) (*revocation.Session, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	shard := revocation.SessionShard(sid)
	base := x.bases[policy][shard]
	if base == nil {
		return nil, fmt.Errorf("%w: shard %s is not observed", revocation.ErrUnavailable, revocation.ShardName(policy.Name, shard))
	}
	if x.objects[types.NamespacedName{Namespace: policy.Namespace, Name: revocation.JournalName(policy.Name)}] == nil {
		return nil, fmt.Errorf("%w: journal %s is not observed", revocation.ErrUnavailable, revocation.JournalName(policy.Name))
	}
	key := revocation.SessionKey(sid)
	v := base.Data[key]
	if p, ok := x.sessions[policy][sid]; ok {
		v = revocation.Newer(key, revocation.Newer(key, v, p.segment), p.journal)
	}
	if v == "" {
		return nil, nil
	}
	s, err := revocation.DecodeSession(v)
	if err != nil {
		return nil, fmt.Errorf("%w: session %s: %w", revocation.ErrUnavailable, sid, err)
	}
	return &s, nil
}

// revokedBefore is the latest subject-wide mark for subject in any of the policy's objects observed, or an
// error wrapping revocation.ErrUnavailable when one of them holds an entry for the subject that does not
// decode.
func (x *index) revokedBefore(policy types.NamespacedName, subject string) (time.Time, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if bad := x.badSubjects[policy][revocation.SubjectKey(subject)]; len(bad) > 0 {
		return time.Time{}, fmt.Errorf("%w: the subject-wide record in %s does not decode", revocation.ErrUnavailable, slices.Min(slices.Collect(maps.Keys(bad))))
	}
	var latest time.Time
	for _, t := range x.subjects[policy][subject] {
		if t.After(latest) {
			latest = t
		}
	}
	return latest, nil
}

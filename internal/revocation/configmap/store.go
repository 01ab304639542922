package configmap

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// DefaultBudget is the bytes of records a shard may hold before new records are refused: half the 1 MiB
// object limit, so that records already in a full shard can still be updated in place.
const DefaultBudget = 512 << 10

// DefaultWriteTimeout bounds one batch's compare-and-swap, conflicts included.
const DefaultWriteTimeout = 10 * time.Second

// DefaultJournalLimit is the journal size past which its entries are sealed into a new segment. Every
// commit rewrites the journal, so a batch of b operations sends about limit/2/b bytes per operation, and a
// seal sends each entry once more; 32 KiB is a few hundred records.
const DefaultJournalLimit = 32 << 10

// DefaultMaxSegmentBytes is how much sealed data may wait for the controller to merge it before the
// journal stops being sealed: about 20 seconds of the heaviest load measured, about 15 minutes of 100k
// sessions refreshing every 15 minutes, and nothing an etcd notices.
const DefaultMaxSegmentBytes = 16 << 20

// JournalGrowth is how many times JournalLimit (and at least MinJournalBound) the journal may grow to while
// it cannot be sealed: the segments waiting for a merge hold MaxSegmentBytes, or segments cannot be created.
// Beyond, decisions that would add to it fail closed, and the object stays well under the 1 MiB limit.
const JournalGrowth = 16

// MinJournalBound is the least bound on the journal's size, for small journal limits.
const MinJournalBound = 64 << 10

// Options configure a Store.
type Options struct {
	// Budget is the byte budget of one shard; 0 means DefaultBudget.
	Budget int
	// WriteTimeout bounds one batch commit; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Linger is how long a policy's writer waits, under load, before it takes the next batch; 0 means no
	// wait.
	Linger time.Duration
	// JournalLimit is the size past which a policy's journal is sealed into a segment; 0 means
	// DefaultJournalLimit.
	JournalLimit int
	// MaxSegmentBytes is how much sealed data may wait to be merged before sealing stops; 0 means
	// DefaultMaxSegmentBytes.
	MaxSegmentBytes int
	// Metrics receives what the store does; nil records nothing.
	Metrics *Metrics
}

// Store keeps a policy's revocation state in ConfigMaps of three kinds:
//   - the journal (revocation.JournalName), one per policy, takes every decision: compare-and-swap Updates,
//     batched, so that the operations that arrive while a write is in flight are committed together in the
//     next one, and on a conflict every pending operation is decided again on the fresh journal;
//   - sealed segments (revocation.SegmentName): past JournalLimit, the writer copies the journal's entries
//     into a new segment, which is never written again, and removes them from the journal;
//   - bases (revocation.ShardName), one per shard: the controller merges sealed segments into them
//     (Compact) and deletes the segments.
//
// So every write is small and independent of how many sessions exist: a commit rewrites the journal, a
// seal writes each entry once more, and only the controller's merges rewrite bases, once per many
// segments. Reads come from an index fed by an informer over all three kinds (register the Store as the
// informer's event handler).
type Store struct {
	client  client.Client
	reader  client.Reader
	index   *index
	opts    Options
	mu      sync.Mutex
	writers map[types.NamespacedName]*writer
	sizes   map[types.NamespacedName]sized // data sizes of observed bases, for HasRoom
}

// sized is the data size of one version of a shard object.
type sized struct {
	resourceVersion string
	bytes           int
}

var _ revocation.Store = (*Store)(nil)

// New returns a Store that writes with c and re-reads with reader (uncached) after a conflict.
func New(c client.Client, reader client.Reader, opts Options) *Store {
	if opts.Budget == 0 {
		opts.Budget = DefaultBudget
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.JournalLimit == 0 {
		opts.JournalLimit = DefaultJournalLimit
	}
	if opts.MaxSegmentBytes == 0 {
		opts.MaxSegmentBytes = DefaultMaxSegmentBytes
	}
	return &Store{client: c, reader: reader, index: newIndex(), opts: opts, writers: map[types.NamespacedName]*writer{},
		sizes: map[types.NamespacedName]sized{}}
}

// EventHandler is what the revocation objects' informer reports to.
func (s *Store) EventHandler() toolscache.ResourceEventHandler { return s.index }

// op is one operation on one entry of one shard. decide is called once per compare-and-swap attempt with
// the entry's current value (ok false when absent) and the journal's data (read-only); it returns the new
// value to store, whether to store it, and the operation's outcome, which stands only once the write (if
// any) has succeeded.
type op struct {
	key    string
	shard  int
	decide func(cur string, ok bool, journal map[string]string) (next string, write bool, outcome error)
	err    error
	done   chan struct{}
}

// writer serialises and batches the writes of one policy's journal.
type writer struct {
	store   *Store
	policy  types.NamespacedName
	journal types.NamespacedName
	mu      sync.Mutex
	pending []*op
	busy    bool
	batch   float64 // a moving average of the batch size, for sealLimit
}

func (s *Store) writer(policy types.NamespacedName) *writer {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.writers[policy]
	if w == nil {
		w = &writer{store: s, policy: policy, journal: types.NamespacedName{Namespace: policy.Namespace, Name: revocation.JournalName(policy.Name)}}
		s.writers[policy] = w
	}
	return w
}

// do queues o on its policy's journal and waits for its outcome. If ctx ends first, the write may still
// happen; the caller answers nothing it cannot stand behind.
func (s *Store) do(ctx context.Context, place revocation.Place, o *op) error {
	if sid, ok := strings.CutPrefix(o.key, "s."); ok && revocation.SessionShard(sid) != place.Shard {
		// Entries in the journal and segments are merged into the base their key names.
		return fmt.Errorf("session %s is placed in shard %d, not %d", sid, revocation.SessionShard(sid), place.Shard)
	}
	o.shard = place.Shard
	o.done = make(chan struct{})
	s.writer(place.Policy).submit(o)
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", revocation.ErrUnavailable, ctx.Err())
	}
}

func (w *writer) submit(o *op) {
	w.mu.Lock()
	w.pending = append(w.pending, o)
	start := !w.busy
	w.busy = true
	w.mu.Unlock()
	if start {
		go w.run()
	}
}

// run commits batches until nothing is pending: whatever queued during one write goes in the next.
func (w *writer) run() {
	last := 0
	for {
		if last > 1 && w.store.opts.Linger > 0 {
			// Under load (the last batch shared a write), let the clients just answered send their next
			// requests before the next write goes out: a little latency for much fewer writes.
			time.Sleep(w.store.opts.Linger)
		}
		w.mu.Lock()
		batch := w.pending
		w.pending = nil
		if len(batch) == 0 {
			w.busy = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		w.commit(batch)
		last = len(batch)
	}
}

// errStale says that this replica has not observed everything a decision needs: a base, or a segment that
// the journal says was sealed and the base does not hold yet.
var errStale = errors.New("the policy's revocation objects observed are older than its journal requires")

// missing is what a batch found errStale about.
type missing struct {
	bases    map[int]bool
	segments map[uint64]bool
}

// commit decides and writes a batch to the policy's journal, against the journal as the API server holds
// it (compare-and-swap), each base as new as the journal requires and every segment sealed since; then
// seals the journal when it has grown past the limit.
func (w *writer) commit(batch []*op) {
	s := w.store
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.WriteTimeout)
	defer cancel()
	began := time.Now()
	ops := len(batch)
	var written *corev1.ConfigMap
	var writes int
	var err error
	for attempt := 0; ; attempt++ {
		var need missing
		var n int
		written, n, err = UpdateShard(ctx, s.client, s.reader, w.journal, s.index.object(w.journal), w.decideAll(batch, &need))
		writes += n
		if !errors.Is(err, errStale) || attempt == 4 {
			break
		}
		if batch, err = w.resolve(ctx, batch, need); err != nil || len(batch) == 0 {
			break
		}
	}
	s.opts.Metrics.commit(ops, writes, written, time.Since(began), err)
	if err != nil {
		if apierrors.IsNotFound(err) {
			err = fmt.Errorf("the journal of policy %s does not exist yet: %w", w.policy.Name, err)
		}
		for _, o := range batch {
			o.err = fmt.Errorf("%w: %w", revocation.ErrUnavailable, err)
		}
	} else if written != nil && writes > 0 {
		s.index.observe(written)
	}
	for _, o := range batch {
		close(o.done)
	}
	// Also after a batch that wrote nothing: a journal that could not be sealed before (merges behind)
	// refuses what would grow it, so only a seal lets it take decisions again.
	w.batch += (float64(ops) - w.batch) / 16
	if err == nil && written != nil && dataSize(written.Data) > w.sealLimit() {
		w.seal(ctx, written)
	}
}

// sealLimit is the journal size past which it is sealed: JournalLimit when batches are large, down to a
// quarter of it when they are small. Each commit rewrites the whole journal, so the bytes it sends per
// operation are about half the journal over the batch size; a quiet policy (batches of one or two) seals
// its journal sooner rather than send 16 KiB with each decision.
func (w *writer) sealLimit() int {
	limit := w.store.opts.JournalLimit
	return min(limit, max(limit/4, int(w.batch*1024)))
}

// decideAll is the mutation of a batch: each operation decides on its record as its shard's base, the
// sealed segments and the journal hold it together, and what it decides goes into the journal.
func (w *writer) decideAll(batch []*op, need *missing) Mutation {
	s := w.store
	return func(journal map[string]string) (bool, error) {
		sealed := revocation.FoldSeq(journal)
		if *need = w.missing(batch, sealed); need.bases != nil {
			return false, errStale
		}
		bases := map[int]*corev1.ConfigMap{}
		sizes := map[int]int{}
		for _, o := range batch {
			if _, seen := bases[o.shard]; !seen {
				base := s.index.base(w.policy, o.shard)
				bases[o.shard], sizes[o.shard] = base, s.size(base)+s.index.pendingBytes(w.policy, o.shard)
			}
		}
		room := max(JournalGrowth*s.opts.JournalLimit, MinJournalBound) - dataSize(journal)
		changed := false
		for _, o := range batch {
			cur := bases[o.shard].Data[o.key]
			if sid, ok := strings.CutPrefix(o.key, "s."); ok {
				cur = revocation.Newer(o.key, cur, s.index.segmentValue(w.policy, sid))
			}
			cur = revocation.Newer(o.key, cur, journal[o.key])
			next, write, outcome := o.decide(cur, cur != "", journal)
			o.err = outcome
			if !write || next == cur {
				continue
			}
			if cur == "" {
				grown := sizes[o.shard] + len(o.key) + len(next)
				if grown > s.opts.Budget {
					o.err = fmt.Errorf("%w: shard %s holds %d of %d bytes", revocation.ErrShardFull,
						revocation.ShardName(w.policy.Name, o.shard), sizes[o.shard], s.opts.Budget)
					continue
				}
				sizes[o.shard] = grown
			}
			grows := len(next) - len(journal[o.key])
			if _, ok := journal[o.key]; !ok {
				grows += len(o.key)
			}
			if grows > room {
				o.err = fmt.Errorf("%w: the journal of policy %s is full: it cannot be sealed (%d bytes of sealed segments wait for the controller to merge them)",
					revocation.ErrUnavailable, w.policy.Name, s.index.segmentBytes(w.policy))
				continue
			}
			room -= grows
			journal[o.key], changed = next, true
		}
		return changed, nil
	}
}

func (m *missing) add(shard int, seq uint64) {
	if m.bases == nil {
		m.bases, m.segments = map[int]bool{}, map[uint64]bool{}
	}
	m.bases[shard] = true
	if seq > 0 {
		m.segments[seq] = true
	}
}

// resolve reads afresh what a batch found missing, and the journal: first the segments, then the bases,
// then the journal, again while the fresh journal names segments not yet seen (under load, others seal
// while this replica reads). A segment that is gone was merged into every base before it was deleted, so
// a base read after it holds its entries; a segment that does not exist while a base read after it has
// not merged that far was never written (its writer failed before the journal named it), and nothing can
// be written to it that the journal does not still hold. Operations on a shard without a base fail; the
// others are returned to be decided again.
func (w *writer) resolve(ctx context.Context, batch []*op, need missing) ([]*op, error) {
	s := w.store
	for round := 0; need.bases != nil && round < 4; round++ {
		var gone []uint64
		for seq := range need.segments {
			cm := &corev1.ConfigMap{}
			err := s.reader.Get(ctx, types.NamespacedName{Namespace: w.policy.Namespace, Name: revocation.SegmentName(w.policy.Name, seq)}, cm)
			switch {
			case err == nil:
				s.index.observe(cm)
			case apierrors.IsNotFound(err):
				gone = append(gone, seq)
			default:
				return batch, fmt.Errorf("read segment %d: %w", seq, err)
			}
		}
		absent := map[int]bool{}
		for shard := range need.bases {
			cm := &corev1.ConfigMap{}
			err := s.reader.Get(ctx, types.NamespacedName{Namespace: w.policy.Namespace, Name: revocation.ShardName(w.policy.Name, shard)}, cm)
			switch {
			case err == nil:
				s.index.observe(cm)
				for _, seq := range gone {
					if revocation.FoldSeq(cm.Data) < seq {
						s.index.hole(w.policy, seq)
					}
				}
			case apierrors.IsNotFound(err):
				absent[shard] = true
			default:
				return batch, fmt.Errorf("read shard %d: %w", shard, err)
			}
		}
		if len(absent) > 0 {
			kept := batch[:0:0]
			for _, o := range batch {
				if absent[o.shard] {
					o.err = fmt.Errorf("%w: shard %s does not exist yet", revocation.ErrUnavailable, revocation.ShardName(w.policy.Name, o.shard))
					close(o.done)
					continue
				}
				kept = append(kept, o)
			}
			batch = kept
		}
		journal := &corev1.ConfigMap{}
		if err := s.reader.Get(ctx, w.journal, journal); err != nil {
			return batch, fmt.Errorf("read the journal: %w", err)
		}
		s.index.observe(journal)
		need = w.missing(batch, revocation.FoldSeq(journal.Data))
	}
	return batch, nil
}

// missing is what this replica has not observed of what deciding batch against a journal that names
// segments up to sealed needs: each shard's base, and the segments above its fold number.
func (w *writer) missing(batch []*op, sealed uint64) missing {
	s := w.store
	var need missing
	folds := map[int]uint64{}
	least := sealed
	for _, o := range batch {
		if _, seen := folds[o.shard]; seen {
			continue
		}
		base := s.index.base(w.policy, o.shard)
		if base == nil {
			need.add(o.shard, 0)
			folds[o.shard] = sealed
			continue
		}
		folds[o.shard] = revocation.FoldSeq(base.Data)
		least = min(least, folds[o.shard])
	}
	unsealed := s.index.unsealed(w.policy, least, sealed) // one pass: bases are mostly merged alike
	for shard, fold := range folds {
		for _, seq := range unsealed {
			if seq > fold {
				need.add(shard, seq)
			}
		}
	}
	return need
}

// seal copies the journal's entries into a new segment, numbered after the last one the journal names
// (or the first free number after it), then removes those entries from the journal and names the
// segment there. The journal is not trimmed if a merge has moved its number past the segment's meanwhile:
// the segment might then be behind the bases' fold numbers, where no reader looks for it, so the entries
// stay in the journal (the segment is merged later all the same, harmlessly). A failed seal leaves the
// journal as it was, and the next commit tries again.
func (w *writer) seal(ctx context.Context, journal *corev1.ConfigMap) {
	s := w.store
	if s.index.segmentBytes(w.policy) >= s.opts.MaxSegmentBytes {
		return // the controller is behind (or down): the journal grows until it merges
	}
	snapshot := make(map[string]string, len(journal.Data))
	for k, v := range journal.Data {
		if k != revocation.FoldKey {
			snapshot[k] = v
		}
	}
	seq := revocation.FoldSeq(journal.Data) + 1
	var segment *corev1.ConfigMap
	for tries := 0; ; tries++ {
		segment = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: journal.Namespace, Name: revocation.SegmentName(w.policy.Name, seq),
				Labels: segmentLabels(journal.Labels), OwnerReferences: journal.OwnerReferences},
			Data:      snapshot,
			Immutable: ptr.To(true),
		}
		err := s.client.Create(ctx, segment)
		s.opts.Metrics.seal(segment, err)
		if err == nil {
			break
		}
		if !apierrors.IsAlreadyExists(err) || tries == 8 {
			return
		}
		seq++
	}
	s.index.observe(segment)
	trimmed, writes, err := UpdateShard(ctx, s.client, s.reader, w.journal, journal, func(data map[string]string) (bool, error) {
		if revocation.FoldSeq(data) >= seq {
			return false, nil
		}
		for k, v := range snapshot {
			if data[k] == v {
				delete(data, k)
			}
		}
		data[revocation.FoldKey] = strconv.FormatUint(seq, 10)
		return true, nil
	})
	s.opts.Metrics.updates(writes, trimmed, err)
	if err == nil && writes > 0 {
		s.index.observe(trimmed)
	}
}

// segmentLabels are a segment's labels: its journal's, and its role.
func segmentLabels(journal map[string]string) map[string]string {
	labels := make(map[string]string, len(journal)+1)
	for k, v := range journal {
		labels[k] = v
	}
	labels[v1alpha1.LabelRevocationRole] = v1alpha1.RevocationRoleSegment
	return labels
}

func dataSize(data map[string]string) int {
	n := 0
	for k, v := range data {
		n += len(k) + len(v)
	}
	return n
}

// sessionRecord decodes a session's current record (nil when it has none). A record that does not decode
// stops the decision: nothing is decided on state that cannot be read.
func sessionRecord(cur string, ok bool, sid string) (*revocation.Session, error) {
	if !ok {
		return nil, nil
	}
	r, err := revocation.DecodeSession(cur)
	if err != nil {
		return nil, fmt.Errorf("%w: session %s: %w", revocation.ErrUnavailable, sid, err)
	}
	return &r, nil
}

// Refresh applies revocation.DecideRefresh to the session's record as the API server holds it now.
func (s *Store) Refresh(ctx context.Context, req revocation.RefreshRequest) (revocation.RefreshResult, error) {
	var res revocation.RefreshResult
	o := &op{key: revocation.SessionKey(req.SessionID)}
	o.decide = func(cur string, ok bool, data map[string]string) (string, bool, error) {
		rec, err := sessionRecord(cur, ok, req.SessionID)
		if err != nil {
			return "", false, err
		}
		next, r, err := revocation.DecideRefresh(rec, s.revokedBefore(req.Policy, req.Subject, data), req)
		res = r
		if next == nil {
			return "", false, err
		}
		return revocation.EncodeSession(*next), true, err
	}
	if err := s.do(ctx, req.Place, o); err != nil {
		return revocation.RefreshResult{}, err
	}
	return res, nil
}

// revokedBefore is the subject's mark: in the shard being written (exact), or in the others (observed). A
// mark elsewhere that does not decode is left out here, as before: a refresh decides on the fresh journal
// and its shard's base, and the index's view of the other objects only adds marks.
func (s *Store) revokedBefore(policy types.NamespacedName, subject string, data map[string]string) time.Time {
	latest, _ := s.index.revokedBefore(policy, subject)
	if v, ok := data[revocation.SubjectKey(subject)]; ok {
		if sub, err := revocation.DecodeSubject(v); err == nil && sub.RevokedBefore.After(latest) {
			latest = sub.RevokedBefore
		}
	}
	return latest
}

// RevokeSession applies revocation.DecideRevokeSession.
func (s *Store) RevokeSession(ctx context.Context, req revocation.RevokeSessionRequest) error {
	o := &op{key: revocation.SessionKey(req.SessionID)}
	o.decide = func(cur string, ok bool, _ map[string]string) (string, bool, error) {
		rec, err := sessionRecord(cur, ok, req.SessionID)
		if err != nil {
			return "", false, err
		}
		next := revocation.DecideRevokeSession(rec, req)
		if next == nil {
			return "", false, nil
		}
		return revocation.EncodeSession(*next), true, nil
	}
	return s.do(ctx, req.Place, o)
}

// RevokeSubject applies revocation.DecideRevokeSubject.
func (s *Store) RevokeSubject(ctx context.Context, req revocation.RevokeSubjectRequest) error {
	o := &op{key: revocation.SubjectKey(req.Subject)}
	o.decide = func(cur string, ok bool, _ map[string]string) (string, bool, error) {
		var rec *revocation.Subject
		if ok {
			r, err := revocation.DecodeSubject(cur)
			if err != nil {
				return "", false, fmt.Errorf("%w: subject record: %w", revocation.ErrUnavailable, err)
			}
			rec = &r
		}
		next := revocation.DecideRevokeSubject(rec, req)
		if next == nil {
			return "", false, nil
		}
		return revocation.EncodeSubject(*next), true, nil
	}
	return s.do(ctx, req.Place, o)
}

// Valid applies revocation.CheckValid to what this replica has observed. It answers ErrUnavailable when
// the session's shard base or the policy's journal is not observed, or when the session's record or a
// subject-wide record of its subject does not decode: a base deleted behind the store's back must not read
// as "no record".
func (s *Store) Valid(policy types.NamespacedName, sid, subject string, authTime time.Time) error {
	rec, err := s.index.session(policy, sid)
	if err != nil {
		return err
	}
	before, err := s.index.revokedBefore(policy, subject)
	if err != nil {
		return err
	}
	return revocation.CheckValid(rec, before, authTime)
}

// Current applies revocation.IsCurrent to what this replica has observed, or answers ErrUnavailable as
// Valid does.
func (s *Store) Current(policy types.NamespacedName, sid string, gen uint64) (bool, error) {
	rec, err := s.index.session(policy, sid)
	if err != nil {
		return false, err
	}
	return revocation.IsCurrent(rec, gen), nil
}

// IsUnavailable reports whether err means the store could not decide (fail closed).
func IsUnavailable(err error) bool {
	return errors.Is(err, revocation.ErrUnavailable) || errors.Is(err, revocation.ErrShardFull)
}

// PlacementFill is the fill, as a fraction of the budget, beyond which a shard takes no new sessions while
// another shard has room. Records never move between shards, so raising the shard count relieves a full
// shard only if new sessions go elsewhere; the rest of the budget is for the sessions placed in the shard
// before, whose first record comes with their first refresh.
const PlacementFill = 0.9

// HasRoom reports whether this replica has observed the shard of place and its policy's journal, and found
// the shard (its base and its entries in the journal and segments) filled below PlacementFill of the
// budget: a shard to place new sessions in. It never blocks on the network.
func (s *Store) HasRoom(place revocation.Place) bool {
	base := s.index.base(place.Policy, place.Shard)
	journal := s.index.object(types.NamespacedName{Namespace: place.Policy.Namespace, Name: revocation.JournalName(place.Policy.Name)})
	if base == nil || journal == nil {
		return false
	}
	return float64(s.size(base)+s.index.pendingBytes(place.Policy, place.Shard)) < PlacementFill*float64(s.opts.Budget)
}

// size is the data size of cm, computed once per resourceVersion.
func (s *Store) size(cm *corev1.ConfigMap) int {
	key := types.NamespacedName{Namespace: cm.Namespace, Name: cm.Name}
	s.mu.Lock()
	c, ok := s.sizes[key]
	s.mu.Unlock()
	if ok && c.resourceVersion == cm.ResourceVersion {
		return c.bytes
	}
	n := dataSize(cm.Data)
	s.mu.Lock()
	s.sizes[key] = sized{resourceVersion: cm.ResourceVersion, bytes: n}
	s.mu.Unlock()
	return n
}

package configmap

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// DefaultBudget is the bytes of records a shard may hold before new records are refused: half the 1 MiB
// object limit, so that records already in a full shard can still be updated in place.
const DefaultBudget = 512 << 10

// DefaultWriteTimeout bounds one batch's compare-and-swap, conflicts included.
const DefaultWriteTimeout = 10 * time.Second

// DefaultJournalLimit is the journal size that triggers a fold. Every decision rewrites the journal and
// every fold rewrites the base, so the bytes sent per operation are about journal/2/batch + base/(limit/
// record): 16 KiB balances the two for bases of a few hundred kilobytes.
const DefaultJournalLimit = 16 << 10

// Options configure a Store.
type Options struct {
	// Budget is the byte budget of one shard; 0 means DefaultBudget.
	Budget int
	// WriteTimeout bounds one batch commit; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Linger is how long a shard's writer waits, under load, before it takes the next batch; 0 means no
	// wait.
	Linger time.Duration
	// JournalLimit is the size past which a shard's journal is folded into its base; 0 means
	// DefaultJournalLimit.
	JournalLimit int
	// Metrics receives what the store does; nil records nothing.
	Metrics *Metrics
}

// Store keeps revocation state in shard ConfigMaps. Each shard is two objects: a base, which holds most
// records and is rewritten only when a journal is folded into it, and a small journal, which takes every
// decision. Reads come from an index fed by an informer over both (register the Store as the informer's
// event handler); writes are compare-and-swap Updates of the journal, batched per shard: operations that
// arrive while a shard's write is in flight are committed together in the next one, and on a conflict
// every pending operation is decided again on the fresh journal. So the bytes written per operation
// depend on the journal's size, not on how many sessions the shard holds.
type Store struct {
	client  client.Client
	reader  client.Reader
	index   *index
	opts    Options
	mu      sync.Mutex
	writers map[types.NamespacedName]*writer
	sizes   map[types.NamespacedName]sized // data sizes of observed shard objects, for HasRoom
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
	return &Store{client: c, reader: reader, index: newIndex(), opts: opts, writers: map[types.NamespacedName]*writer{},
		sizes: map[types.NamespacedName]sized{}}
}

// EventHandler is what the shard informer reports to.
func (s *Store) EventHandler() toolscache.ResourceEventHandler { return s.index }

// op is one operation on one entry of one shard. decide is called once per compare-and-swap attempt with
// the entry's current value (ok false when absent) and the shard's data (read-only); it returns the new
// value to store, whether to store it, and the operation's outcome, which stands only once the write (if
// any) has succeeded.
type op struct {
	key    string
	decide func(cur string, ok bool, data map[string]string) (next string, write bool, outcome error)
	err    error
	done   chan struct{}
}

// writer serialises and batches the writes of one shard.
type writer struct {
	store   *Store
	shard   types.NamespacedName
	mu      sync.Mutex
	pending []*op
	busy    bool
}

func (s *Store) writer(shard types.NamespacedName) *writer {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.writers[shard]
	if w == nil {
		w = &writer{store: s, shard: shard}
		s.writers[shard] = w
	}
	return w
}

// do queues o on its shard and waits for its outcome. If ctx ends first, the write may still happen; the
// caller answers nothing it cannot stand behind.
func (s *Store) do(ctx context.Context, place revocation.Place, o *op) error {
	shard := types.NamespacedName{Namespace: place.Policy.Namespace, Name: revocation.ShardName(place.Policy.Name, place.Shard)}
	o.done = make(chan struct{})
	s.writer(shard).submit(o)
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

// errStaleBase says that the journal names a fold newer than the base this replica holds: records it
// removed are in a base the informer has not delivered yet.
var errStaleBase = errors.New("the shard's base is older than its journal requires")

// commit decides and writes a batch to the shard's journal, against the journal as the API server holds
// it (compare-and-swap) and a base at least as new as the journal requires; then folds the journal into
// the base when it has grown past the limit.
func (w *writer) commit(batch []*op) {
	s := w.store
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.WriteTimeout)
	defer cancel()
	began := time.Now()
	journalKey := types.NamespacedName{Namespace: w.shard.Namespace, Name: w.shard.Name + revocation.JournalSuffix}
	var written *corev1.ConfigMap
	var writes int
	var err error
	for attempt := 0; ; attempt++ {
		base := s.index.object(w.shard)
		written, writes, err = UpdateShard(ctx, s.client, s.reader, journalKey, s.index.object(journalKey), w.decideAll(batch, base))
		if !errors.Is(err, errStaleBase) || attempt == 3 {
			break
		}
		fresh := &corev1.ConfigMap{}
		if err = s.reader.Get(ctx, w.shard, fresh); err != nil {
			break
		}
		s.index.observe(fresh)
	}
	s.opts.Metrics.commit(len(batch), writes, written, time.Since(began), err)
	if err != nil {
		if apierrors.IsNotFound(err) {
			err = fmt.Errorf("shard %s does not exist yet: %w", w.shard.Name, err)
		}
		for _, o := range batch {
			o.err = fmt.Errorf("%w: %w", revocation.ErrUnavailable, err)
		}
	} else if writes > 0 {
		s.index.observe(written)
	}
	for _, o := range batch {
		close(o.done)
	}
	if err == nil && dataSize(written.Data) > s.opts.JournalLimit {
		w.fold(ctx, journalKey, written)
	}
}

// decideAll is the mutation of a batch: each operation decides on its record as the base and the journal
// hold it together, and what it decides goes into the journal.
func (w *writer) decideAll(batch []*op, base *corev1.ConfigMap) Mutation {
	s := w.store
	return func(journal map[string]string) (bool, error) {
		if base == nil || revocation.FoldSeq(base.Data) < revocation.FoldSeq(journal) {
			return false, errStaleBase
		}
		size := dataSize(base.Data) + dataSize(journal)
		changed := false
		for _, o := range batch {
			cur := revocation.Newer(o.key, base.Data[o.key], journal[o.key])
			next, write, outcome := o.decide(cur, cur != "", journal)
			o.err = outcome
			if !write || next == cur {
				continue
			}
			grown := size - len(journal[o.key]) + len(next)
			if _, inJournal := journal[o.key]; !inJournal {
				grown += len(o.key)
			}
			if cur == "" && grown > s.opts.Budget {
				o.err = fmt.Errorf("%w: %s holds %d of %d bytes", revocation.ErrShardFull, w.shard.Name, size, s.opts.Budget)
				continue
			}
			journal[o.key], size, changed = next, grown, true
		}
		return changed, nil
	}
}

// fold moves a journal's records into the shard's base: first the base takes them (merged by
// revocation.Newer, its fold number raised), then the journal drops the entries that have not changed
// since and records that fold number, so that a reader of the journal knows which base it needs. Both
// writes are compare-and-swap; a failed fold leaves the journal as it was, and the next commit tries again.
func (w *writer) fold(ctx context.Context, journalKey types.NamespacedName, journal *corev1.ConfigMap) {
	s := w.store
	snapshot := make(map[string]string, len(journal.Data))
	for k, v := range journal.Data {
		if k != revocation.FoldKey {
			snapshot[k] = v
		}
	}
	var seq uint64
	base, baseWrites, err := UpdateShard(ctx, s.client, s.reader, w.shard, nil, func(data map[string]string) (bool, error) {
		for k, v := range snapshot {
			data[k] = revocation.Newer(k, data[k], v)
		}
		seq = revocation.FoldSeq(data) + 1
		data[revocation.FoldKey] = strconv.FormatUint(seq, 10)
		return true, nil
	})
	s.opts.Metrics.fold(baseWrites, base, err)
	if err != nil {
		return
	}
	s.index.observe(base)
	trimmed, journalWrites, err := UpdateShard(ctx, s.client, s.reader, journalKey, journal, func(data map[string]string) (bool, error) {
		for k, v := range snapshot {
			if data[k] == v {
				delete(data, k)
			}
		}
		if revocation.FoldSeq(data) < seq {
			data[revocation.FoldKey] = strconv.FormatUint(seq, 10)
		}
		return true, nil
	})
	s.opts.Metrics.fold(journalWrites, trimmed, err)
	if err == nil {
		s.index.observe(trimmed)
	}
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

// revokedBefore is the subject's mark: in the shard being written (exact), or in the others (observed).
func (s *Store) revokedBefore(policy types.NamespacedName, subject string, data map[string]string) time.Time {
	latest := s.index.revokedBefore(policy, subject)
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

// Valid applies revocation.CheckValid to what this replica has observed.
func (s *Store) Valid(policy types.NamespacedName, sid, subject string, authTime time.Time) error {
	return revocation.CheckValid(s.index.session(policy, sid), s.index.revokedBefore(policy, subject), authTime)
}

// Current applies revocation.IsCurrent to what this replica has observed.
func (s *Store) Current(policy types.NamespacedName, sid string, gen uint64) bool {
	return revocation.IsCurrent(s.index.session(policy, sid), gen)
}

// IsUnavailable reports whether err means the store could not decide (fail closed).
func IsUnavailable(err error) bool {
	return errors.Is(err, revocation.ErrUnavailable) || errors.Is(err, revocation.ErrShardFull)
}

// ShardObject returns the newest copy of a shard this replica holds (nil if none); do not modify it.
func (s *Store) ShardObject(key types.NamespacedName) *corev1.ConfigMap { return s.index.object(key) }

// PlacementFill is the fill, as a fraction of the budget, beyond which a shard takes no new sessions while
// another shard has room. Records never move between shards, so raising the shard count relieves a full
// shard only if new sessions go elsewhere; the rest of the budget is for the sessions placed in the shard
// before, whose first record comes with their first refresh.
const PlacementFill = 0.9

// HasRoom reports whether this replica has observed the shard of place, base and journal, and found it
// filled below PlacementFill of the budget: a shard to place new sessions in. It never blocks on the
// network.
func (s *Store) HasRoom(place revocation.Place) bool {
	key := types.NamespacedName{Namespace: place.Policy.Namespace, Name: revocation.ShardName(place.Policy.Name, place.Shard)}
	base := s.index.object(key)
	journal := s.index.object(types.NamespacedName{Namespace: key.Namespace, Name: key.Name + revocation.JournalSuffix})
	if base == nil || journal == nil {
		return false
	}
	return float64(s.size(base)+s.size(journal)) < PlacementFill*float64(s.opts.Budget)
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

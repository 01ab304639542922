package peer

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// Linger is how long forwarded decisions for one owner gather before they go out together: a batch costs
// one request and one signature whatever its size.
const Linger = 5 * time.Millisecond

// maxBatch sends a batch at once when it is this large.
const maxBatch = 256

// forwardTimeout bounds one batch's round trip: the owner's commit (configmap.DefaultWriteTimeout) and a
// margin.
const forwardTimeout = configmap.DefaultWriteTimeout + 2*time.Second

// ownerWait is how long a decision waits for its journal to have an owner (a new policy's journal, or one
// just released by a replica handing it over) before it is refused with 503.
const ownerWait = time.Second

// Router is the issuer's revocation.Store when replicas forward: a journal's decisions are made by the
// local store on the replica that owns the journal, and sent to it by the others. Reads (Valid, Current,
// HasRoom) are the local store's, from what this replica observes. A replica that cannot reach the owner,
// or finds no owner, answers revocation.ErrUnavailable: it never decides for a journal it does not own.
type Router struct {
	*configmap.Store
	owners  *Owners
	keys    *Keys
	client  *http.Client
	metrics *Metrics

	mu    sync.Mutex
	links map[string]*link // by owner address
}

// NewRouter returns a Router over local.
func NewRouter(local *configmap.Store, owners *Owners, keys *Keys, metrics *Metrics) *Router {
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Router{Store: local, owners: owners, keys: keys, metrics: metrics,
		client: &http.Client{Transport: transport, Timeout: forwardTimeout}, links: map[string]*link{}}
}

var _ revocation.Store = (*Router)(nil)

// Refresh is decided by the owner of the session's journal.
func (r *Router) Refresh(ctx context.Context, req revocation.RefreshRequest) (revocation.RefreshResult, error) {
	address, self, err := r.owner(ctx, req.Place)
	if err != nil {
		return revocation.RefreshResult{}, err
	}
	if self {
		return r.Store.Refresh(ctx, req)
	}
	res, err := r.forward(ctx, address, wireOp{Refresh: &req})
	if err != nil {
		return revocation.RefreshResult{}, err
	}
	if res.Refresh == nil {
		return revocation.RefreshResult{}, fmt.Errorf("%w: the journal's owner answered no result", revocation.ErrUnavailable)
	}
	return *res.Refresh, nil
}

// RevokeSession is decided by the owner of the session's journal.
func (r *Router) RevokeSession(ctx context.Context, req revocation.RevokeSessionRequest) error {
	address, self, err := r.owner(ctx, req.Place)
	if err != nil {
		return err
	}
	if self {
		return r.Store.RevokeSession(ctx, req)
	}
	_, err = r.forward(ctx, address, wireOp{RevokeSession: &req})
	return err
}

// RevokeSubject is decided by the owner of the subject's journal.
func (r *Router) RevokeSubject(ctx context.Context, req revocation.RevokeSubjectRequest) error {
	address, self, err := r.owner(ctx, req.Place)
	if err != nil {
		return err
	}
	if self {
		return r.Store.RevokeSubject(ctx, req)
	}
	_, err = r.forward(ctx, address, wireOp{RevokeSubject: &req})
	return err
}

// owner finds who decides for place's journal, waiting up to ownerWait for one to take it.
func (r *Router) owner(ctx context.Context, place revocation.Place) (address string, self bool, err error) {
	journal := revocation.JournalName(place.Policy.Name)
	if address, self, ok := r.owners.Owner(journal); ok {
		return address, self, nil
	}
	r.owners.Poke()
	deadline := time.NewTimer(ownerWait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", false, fmt.Errorf("%w: %w", revocation.ErrUnavailable, ctx.Err())
		case <-deadline.C:
			r.metrics.forwarded("no_owner")
			return "", false, fmt.Errorf("%w: journal %s has no owner now (it is changing hands)", revocation.ErrUnavailable, journal)
		case <-tick.C:
			if address, self, ok := r.owners.Owner(journal); ok {
				return address, self, nil
			}
		}
	}
}

// forward queues op for the owner at address and waits for its outcome.
func (r *Router) forward(ctx context.Context, address string, op wireOp) (wireResult, error) {
	key := r.keys.Current()
	if key == nil {
		r.metrics.forwarded("no_key")
		return wireResult{}, fmt.Errorf("%w: the peer key is not loaded yet, so the journal's owner cannot be asked", revocation.ErrUnavailable)
	}
	p := &pending{op: op, done: make(chan struct{})}
	r.link(address).add(p)
	select {
	case <-p.done:
	case <-ctx.Done():
		return wireResult{}, fmt.Errorf("%w: %w", revocation.ErrUnavailable, ctx.Err())
	}
	if p.err != nil {
		r.metrics.forwarded("unreachable")
		return wireResult{}, fmt.Errorf("%w: the journal's owner %s: %w", revocation.ErrUnavailable, address, p.err)
	}
	r.metrics.forwarded("answered")
	return p.res, decodeError(p.res)
}

func (r *Router) link(address string) *link {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.links[address]
	if l == nil {
		l = &link{router: r, address: address}
		r.links[address] = l
	}
	return l
}

// pending is one forwarded decision waiting for its batch.
type pending struct {
	op   wireOp
	res  wireResult
	err  error
	done chan struct{}
}

// link gathers the decisions for one owner into batches: the first of a batch starts a Linger timer, and
// whatever arrived by then goes out in one request. Batches do not wait for each other.
type link struct {
	router  *Router
	address string
	mu      sync.Mutex
	queue   []*pending
	timer   bool
}

func (l *link) add(p *pending) {
	l.mu.Lock()
	l.queue = append(l.queue, p)
	switch {
	case len(l.queue) >= maxBatch:
		batch := l.queue
		l.queue = nil
		l.mu.Unlock()
		go l.send(batch)
		return
	case !l.timer:
		l.timer = true
		time.AfterFunc(Linger, l.flush)
	}
	l.mu.Unlock()
}

func (l *link) flush() {
	l.mu.Lock()
	batch := l.queue
	l.queue, l.timer = nil, false
	l.mu.Unlock()
	if len(batch) > 0 {
		l.send(batch)
	}
}

func (l *link) send(batch []*pending) {
	r := l.router
	ops := make([]wireOp, len(batch))
	for i, p := range batch {
		ops[i] = p.op
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	results, err := post(ctx, r.client, l.address, r.keys.Current(), ops, time.Now())
	r.metrics.batch(len(batch))
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.res = results[i]
		}
		close(p.done)
	}
}

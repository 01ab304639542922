package peer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// Labels and annotations of the issuer's Leases.
const (
	// ComponentLease is LabelComponent's value on every Lease the replicas keep: one per replica (its
	// membership) and one per journal (its owner).
	ComponentLease = "issuer-lease"
	// LabelLeaseRole says which of the two a Lease is.
	LabelLeaseRole = "tokenwarden.io/lease-role"
	// RoleMember and RoleJournal are LabelLeaseRole's values.
	RoleMember  = "member"
	RoleJournal = "journal"
	// AnnotationPeerAddress is the holder's peer port, host:port, where the others send it decisions.
	AnnotationPeerAddress = "tokenwarden.io/peer-address"
)

// DefaultLeaseDuration is how long a Lease stands without renewal: the bound on how long a journal whose
// owner died answers 503.
const DefaultLeaseDuration = 10 * time.Second

// OwnersConfig configures Owners.
type OwnersConfig struct {
	// Namespace is the issuer's: where the Leases are.
	Namespace string
	// Identity names this replica among the others, uniquely (the peer address will do).
	Identity string
	// Address is where the others reach this replica's peer port.
	Address string
	// LeaseDuration is how long a Lease stands without renewal; zero means DefaultLeaseDuration. Every
	// replica must use the same.
	LeaseDuration time.Duration
	// Client writes the Leases.
	Client client.Client
	// Journals lists the journals (their ConfigMaps' names in Namespace) to find owners for.
	Journals func() []string
	// Now is the local clock; nil means time.Now. Expiry is measured by it, never by another replica's.
	Now    func() time.Time
	Logger logr.Logger
}

// Owners keeps this replica's membership Lease, takes and renews the journal Leases that fall to it, hands
// over those that fall to another live replica, and tells who owns a journal now.
//
// A Lease is judged by when this replica saw it change, by its own clock, as client-go's leader election
// does: another replica's clock is never compared with this one's. A holder stops deciding for a journal
// once two thirds of the duration have passed since its last renewal was sent, and another replica takes
// the Lease only after a whole duration without seeing it change, so with clocks that run at about the same
// rate the two never both decide; and when they do (a paused process), the journal's compare-and-swap
// still refuses the second writer of any version.
type Owners struct {
	cfg  OwnersConfig
	kick chan struct{}

	mu       sync.Mutex
	observed map[string]observation // by Lease name
	renewed  map[string]time.Time   // journal Leases this replica holds: when the last renewal was sent
}

// observation is what this replica saw of a Lease, and when (by its own clock).
type observation struct {
	lease *coordinationv1.Lease
	at    time.Time
}

// NewOwners returns Owners for cfg; register EventHandler with the Lease informer and call Run.
func NewOwners(cfg OwnersConfig) *Owners {
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Owners{cfg: cfg, kick: make(chan struct{}, 1), observed: map[string]observation{}, renewed: map[string]time.Time{}}
}

// MemberLeaseName is the name of the membership Lease of the replica named identity.
func MemberLeaseName(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return "tokenwarden-issuer-" + hex.EncodeToString(sum[:8])
}

// JournalLeaseName is the name of a journal's owner Lease: the journal's own name (a Lease and a ConfigMap
// may share one).
func JournalLeaseName(journal string) string { return journal }

// EventHandler is what the Lease informer reports to.
func (o *Owners) EventHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { o.see(obj) },
		UpdateFunc: func(_, obj any) { o.see(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if l, ok := obj.(*coordinationv1.Lease); ok {
				o.mu.Lock()
				delete(o.observed, l.Name)
				o.mu.Unlock()
				o.Poke()
			}
		},
	}
}

func (o *Owners) see(obj any) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	o.mu.Lock()
	prev, seen := o.observed[l.Name]
	changed := !seen || prev.lease.ResourceVersion != l.ResourceVersion
	if changed {
		o.observed[l.Name] = observation{lease: l, at: o.cfg.Now()}
	}
	o.mu.Unlock()
	if changed && l.Labels[LabelLeaseRole] == RoleJournal && holder(l) != o.cfg.Identity {
		o.Poke() // a Lease released or taken: see at once whether it falls to this replica
	}
}

// Poke asks Run for a pass now: a Lease changed, or a request found its journal without an owner.
func (o *Owners) Poke() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

func holder(l *coordinationv1.Lease) string { return ptr.Deref(l.Spec.HolderIdentity, "") }

// live reports whether ob's holder still stands: seen changed less than its duration ago.
func (o *Owners) live(ob observation, now time.Time) bool {
	d := time.Duration(ptr.Deref(ob.lease.Spec.LeaseDurationSeconds, 0)) * time.Second
	return holder(ob.lease) != "" && now.Sub(ob.at) < d
}

// Owned reports whether this replica may decide for journal now: it holds the journal's Lease and renewed
// it less than two thirds of the duration ago.
func (o *Owners) Owned(journal string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ownedLocked(JournalLeaseName(journal), o.cfg.Now())
}

func (o *Owners) ownedLocked(name string, now time.Time) bool {
	at, ok := o.renewed[name]
	if !ok || now.Sub(at) >= o.cfg.LeaseDuration*2/3 {
		return false
	}
	ob, seen := o.observed[name]
	return !seen || holder(ob.lease) == o.cfg.Identity
}

// Owner is where to send journal's decisions: the peer address of its Lease's live holder. ok is false
// while the journal has no live owner (it is changing hands, or was never taken), or when the holder is
// this replica but its Lease has lapsed.
func (o *Owners) Owner(journal string) (address string, self bool, ok bool) {
	name := JournalLeaseName(journal)
	now := o.cfg.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ownedLocked(name, now) {
		return o.cfg.Address, true, true
	}
	ob, seen := o.observed[name]
	if !seen || !o.live(ob, now) || holder(ob.lease) == o.cfg.Identity {
		return "", false, false
	}
	address = ob.lease.Annotations[AnnotationPeerAddress]
	return address, false, address != ""
}

// Run keeps the Leases until ctx ends, then releases the journals this replica holds and deletes its
// membership, so that the others take its journals at once rather than after a lease duration.
func (o *Owners) Run(ctx context.Context) {
	period := o.cfg.LeaseDuration / 5
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		o.pass(ctx)
		select {
		case <-ctx.Done():
			o.releaseAll()
			return
		case <-t.C:
		case <-o.kick:
		}
	}
}

// pass renews this replica's membership, then for every journal takes, renews or hands over its Lease.
func (o *Owners) pass(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.LeaseDuration/3)
	defer cancel()
	log := o.cfg.Logger
	if err := o.renew(ctx, MemberLeaseName(o.cfg.Identity), RoleMember, ""); err != nil {
		log.V(1).Info("Renewing the membership Lease failed", "error", err.Error())
	}
	journals := o.cfg.Journals()
	plan := o.plan(journals)
	for _, j := range journals {
		name := JournalLeaseName(j)
		var err error
		switch mine := plan[j] == o.cfg.Identity; {
		case mine:
			err = o.renew(ctx, name, RoleJournal, j)
		case o.holds(name):
			err = o.release(ctx, name)
		}
		if err != nil {
			log.V(1).Info("Keeping a journal Lease failed", "journal", j, "error", err.Error())
		}
	}
	o.dropGone(ctx, journals)
}

// members are the identities of the live replicas, this one included, sorted.
func (o *Owners) members() []string {
	now := o.cfg.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	out := []string{o.cfg.Identity}
	for _, ob := range o.observed {
		if ob.lease.Labels[LabelLeaseRole] == RoleMember && o.live(ob, now) && holder(ob.lease) != o.cfg.Identity {
			out = append(out, holder(ob.lease))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// plan assigns each journal a live replica: the highest-scoring one by rendezvous hashing among those not
// yet at their fair share (ceil(journals/replicas)), journals taken in the order of their names. Every
// replica that sees the same members computes the same plan; shares are even, and a replica coming or going
// moves few journals.
func (o *Owners) plan(journals []string) map[string]string {
	members := o.members()
	share := (len(journals) + len(members) - 1) / max(len(members), 1)
	load := map[string]int{}
	out := make(map[string]string, len(journals))
	sorted := slices.Clone(journals)
	slices.Sort(sorted)
	for _, j := range sorted {
		ranked := slices.Clone(members)
		slices.SortFunc(ranked, func(a, b string) int { return cmp.Compare(score(b, j), score(a, j)) })
		for _, m := range ranked {
			if load[m] < share {
				out[j] = m
				load[m]++
				break
			}
		}
	}
	return out
}

func score(member, journal string) uint64 {
	sum := sha256.Sum256([]byte(member + "\x00" + journal))
	return binary.BigEndian.Uint64(sum[:8])
}

func (o *Owners) holds(name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.renewed[name]
	return ok
}

// renew takes or renews the Lease name for this replica: creates it when absent, renews it when held, takes
// it when released or when its holder has not renewed it for a whole duration. A Lease another replica
// holds and renews is left alone: that one hands it over when it sees this replica live.
func (o *Owners) renew(ctx context.Context, name, role, journal string) error {
	now := o.cfg.Now()
	o.mu.Lock()
	ob, seen := o.observed[name]
	o.mu.Unlock()
	secs := int32(o.cfg.LeaseDuration / time.Second)
	stamp := metav1.NewMicroTime(now)
	if !seen {
		l := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: o.cfg.Namespace, Name: name,
				Labels:      map[string]string{v1alpha1.LabelComponent: ComponentLease, LabelLeaseRole: role},
				Annotations: map[string]string{AnnotationPeerAddress: o.cfg.Address}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(o.cfg.Identity), LeaseDurationSeconds: ptr.To(secs),
				AcquireTime: &stamp, RenewTime: &stamp},
		}
		if err := o.cfg.Client.Create(ctx, l); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return nil // another replica created it first; the informer will show whose it is
			}
			return err
		}
		o.took(name, l, now, role)
		return nil
	}
	cur := ob.lease
	mine := holder(cur) == o.cfg.Identity
	if !mine && o.live(ob, now) {
		return nil
	}
	l := cur.DeepCopy()
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[AnnotationPeerAddress] = o.cfg.Address
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = ptr.To(o.cfg.Identity), ptr.To(secs), &stamp
	if !mine {
		l.Spec.AcquireTime = &stamp
		l.Spec.LeaseTransitions = ptr.To(ptr.Deref(l.Spec.LeaseTransitions, 0) + 1)
	}
	if err := o.cfg.Client.Update(ctx, l); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			o.lost(name)
		}
		return err
	}
	if !mine && role == RoleJournal {
		o.cfg.Logger.Info("Took over a journal", "journal", journal, "from", holder(cur))
	}
	o.took(name, l, now, role)
	return nil
}

// took records a successful write of Lease l at sent (when the request went out: the renewal counts from
// then, not from its answer).
func (o *Owners) took(name string, l *coordinationv1.Lease, sent time.Time, role string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.observed[name] = observation{lease: l, at: sent}
	if role == RoleJournal {
		o.renewed[name] = sent
	}
}

// lost forgets that this replica holds name: it stops deciding for the journal at once.
func (o *Owners) lost(name string) {
	o.mu.Lock()
	delete(o.renewed, name)
	o.mu.Unlock()
}

// release hands a journal's Lease over: this replica stops deciding first, then clears the holder so that
// the replica the plan names takes it on its next pass (at once: the change wakes it).
func (o *Owners) release(ctx context.Context, name string) error {
	o.lost(name)
	o.mu.Lock()
	ob, seen := o.observed[name]
	o.mu.Unlock()
	if !seen || holder(ob.lease) != o.cfg.Identity {
		return nil
	}
	l := ob.lease.DeepCopy()
	l.Spec.HolderIdentity = nil
	if err := o.cfg.Client.Update(ctx, l); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// releaseAll hands over every journal this replica holds, and ends its membership, when it stops.
func (o *Owners) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), o.cfg.LeaseDuration/3)
	defer cancel()
	o.mu.Lock()
	names := make([]string, 0, len(o.renewed))
	for name := range o.renewed {
		names = append(names, name)
	}
	o.mu.Unlock()
	for _, name := range names {
		_ = o.release(ctx, name)
	}
	member := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: o.cfg.Namespace, Name: MemberLeaseName(o.cfg.Identity)}}
	_ = o.cfg.Client.Delete(ctx, member)
}

// dropGone deletes the journal Leases this replica holds whose journal no longer exists (its policy was
// deleted), and membership Leases that have not been renewed for ten durations (replicas long gone).
func (o *Owners) dropGone(ctx context.Context, journals []string) {
	exists := map[string]bool{}
	for _, j := range journals {
		exists[JournalLeaseName(j)] = true
	}
	now := o.cfg.Now()
	var gone []*coordinationv1.Lease
	o.mu.Lock()
	for name, ob := range o.observed {
		switch ob.lease.Labels[LabelLeaseRole] {
		case RoleJournal:
			if _, held := o.renewed[name]; held && !exists[name] {
				gone = append(gone, ob.lease)
			}
		case RoleMember:
			if now.Sub(ob.at) > 10*o.cfg.LeaseDuration {
				gone = append(gone, ob.lease)
			}
		}
	}
	o.mu.Unlock()
	for _, l := range gone {
		o.lost(l.Name)
		err := o.cfg.Client.Delete(ctx, l, client.Preconditions{ResourceVersion: &l.ResourceVersion})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			o.cfg.Logger.V(1).Info("Deleting a stale Lease failed", "lease", l.Name, "error", err.Error())
		}
	}
}

package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
	"github.com/tokenwarden/tokenwarden/issuer/app"
	"github.com/tokenwarden/tokenwarden/issuer/peer"
)

// journal is the name of the fixture policy's journal in the issuer's namespace (also its Lease's).
func (f *fixture) journal() string {
	p := &v1alpha1.TokenPolicy{}
	must(f.t, env.Client.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: f.policy}, p))
	return configmap.For(p, issuerNS).JournalName()
}

// owner waits until the journal's Lease names a holder, and returns it.
func (f *fixture) owner() string {
	f.t.Helper()
	var holder string
	testenv.Eventually(f.t, 30*time.Second, func() (bool, string) {
		l := &coordinationv1.Lease{}
		if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: issuerNS, Name: peer.JournalLeaseName(f.journal())}, l); err != nil {
			return false, err.Error()
		}
		holder = ptr.Deref(l.Spec.HolderIdentity, "")
		return holder != "", "the journal's Lease has no holder"
	})
	return holder
}

// peerPost sends body to a peer port with header set by sign (nothing when nil).
func peerPost(t *testing.T, address string, body []byte, sign func(*http.Request)) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+address+peer.DecidePath, bytes.NewReader(body))
	must(t, err)
	req.Header.Set("Content-Type", "application/json")
	if sign != nil {
		sign(req)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestThePeerPortRefusesPeersWithoutTheKeyAndDecidesNothing(t *testing.T) {
	f := newFixture(t, 2, nil)
	rt := f.login(0, "alice").str("refresh_token")
	for i := range f.replicas { // the journal gets an owner, and one replica forwards to it
		r := f.refresh(i, rt)
		if r.status != http.StatusOK {
			t.Fatalf("replica %d: refresh: %d %s", i, r.status, r.body)
		}
		rt = r.str("refresh_token")
	}
	owner := f.owner()
	if owner != f.replicas[0].peer && owner != f.replicas[1].peer {
		t.Fatalf("the journal's owner %q is neither replica (%s, %s)", owner, f.replicas[0].peer, f.replicas[1].peer)
	}

	// What an attacker on the cluster network would ask the owner: revoke every session of alice.
	p := &v1alpha1.TokenPolicy{}
	must(t, env.Client.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: f.policy}, p))
	place := revocation.Place{Policy: configmap.For(p, issuerNS).Key, Shard: 0}
	forged := func(subject string) []byte {
		b, err := json.Marshal([]map[string]any{{"revokeSubject": revocation.RevokeSubjectRequest{Place: place, Subject: subject,
			Before: time.Now().Add(time.Hour), Expiry: time.Now().Add(24 * time.Hour), Reason: "forged"}}})
		must(t, err)
		return b
	}
	body := forged("alice")
	wrongKey := make([]byte, 32)
	_, _ = rand.Read(wrongKey)
	secret := &corev1.Secret{}
	must(t, env.Client.Get(context.Background(), types.NamespacedName{Namespace: issuerNS, Name: peerSecret}, secret))
	key := secret.Data[peer.KeyField]

	for _, c := range []struct {
		name string
		sign func(*http.Request)
	}{
		{"no credential", nil},
		{"a wrong key", func(r *http.Request) { must(t, peer.SignRequest(r, wrongKey, body, time.Now())) }},
		{"the right key over another body", func(r *http.Request) { must(t, peer.SignRequest(r, key, forged("bob"), time.Now())) }},
		{"the right key a minute ago", func(r *http.Request) { must(t, peer.SignRequest(r, key, body, time.Now().Add(-time.Minute))) }},
	} {
		if status, msg := peerPost(t, owner, body, c.sign); status != http.StatusUnauthorized {
			t.Errorf("%s: %d %s; want 401", c.name, status, msg)
		}
	}
	// A request signed with the key, recorded and sent again, is refused the second time.
	harmless := forged("nobody")
	var recorded http.Header
	status, msg := peerPost(t, owner, harmless, func(r *http.Request) {
		must(t, peer.SignRequest(r, key, harmless, time.Now()))
		recorded = r.Header.Clone()
	})
	if status != http.StatusOK {
		t.Fatalf("a request signed with the peer key: %d %s; want 200", status, msg)
	}
	if status, msg := peerPost(t, owner, harmless, func(r *http.Request) { r.Header = recorded }); status != http.StatusUnauthorized {
		t.Errorf("a replayed request: %d %s; want 401", status, msg)
	}
	// Nothing was decided: alice's session goes on, on both replicas.
	for i := range f.replicas {
		r := f.refresh(i, rt)
		if r.status != http.StatusOK {
			t.Fatalf("replica %d: refresh after the refused requests: %d %s; want 200", i, r.status, r.body)
		}
		rt = r.str("refresh_token")
	}
}

// proxy forwards TCP connections to a target until blocked; blocked, it cuts every connection and refuses
// new ones, as a blocked port would.
type proxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	blocked bool
	conns   map[net.Conn]bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.block(true) })
	go p.serve()
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.blocked {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

func (p *proxy) block(b bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = b
	if b {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

func TestAReplicaThatCannotReachTheOwnerAnswers503AndDecidesNothing(t *testing.T) {
	f := newFixture(t, 0, nil)
	var proxies []*proxy
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		px := newProxy(t, ln.Addr().String())
		proxies = append(proxies, px)
		r := startReplicaWith(t, f.clock, false, func(o *app.Options) {
			o.Peers = &app.Peers{Listener: ln, Advertise: px.ln.Addr().String(), KeySecret: peerSecret, LeaseDuration: leaseDuration}
		})
		f.replicas = append(f.replicas, r)
		f.waitServed(r)
	}
	rt := f.login(0, "alice").str("refresh_token")
	first := f.refresh(0, rt)
	if first.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", first.status, first.body)
	}
	rt = first.str("refresh_token")
	owner := f.owner()
	o := 0
	if owner == proxies[1].ln.Addr().String() {
		o = 1
	}
	other := 1 - o

	proxies[o].block(true)
	for range 3 {
		r := f.refresh(other, rt)
		if r.status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" {
			t.Fatalf("refresh at the replica that cannot reach the owner: %d %s; want 503 temporarily_unavailable", r.status, r.body)
		}
	}
	// The owner kept its Lease (it still reaches the API server); the other did not take the journal.
	if now := f.owner(); now != owner {
		t.Fatalf("the journal changed hands to %s while its owner was alive", now)
	}
	proxies[o].block(false)
	// The refused refreshes decided nothing: the same token is still current, at either replica.
	var r response
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		r = f.refresh(other, rt)
		return r.status != http.StatusServiceUnavailable, string(r.body)
	})
	if r.status != http.StatusOK {
		t.Fatalf("refresh once the owner is reachable again: %d %s; want 200", r.status, r.body)
	}
}

func TestAReplicaWritingBesideTheOwnerCannotRedeemATokenTwice(t *testing.T) {
	// A replica that does not forward writes the journal itself, as a replica that still believes it owns
	// the journal after losing its Lease would: compare-and-swap is what keeps the token single-use.
	f := newFixture(t, 1, nil)
	rogue := startReplicaWith(t, f.clock, false, func(o *app.Options) { o.Peers = nil })
	f.replicas = append(f.replicas, rogue)
	f.waitServed(rogue)
	rt := f.login(0, "alice").str("refresh_token")
	wins := 0
	for i, r := range f.concurrentRefreshes(30, rt) {
		switch {
		case r.status == http.StatusOK:
			wins++
		case r.status != http.StatusBadRequest || r.str("error") != "invalid_grant":
			t.Fatalf("refresh %d: %d %s; want 200 once and invalid_grant for the others", i, r.status, r.body)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of 30 concurrent refreshes of one token succeeded; want exactly 1", wins)
	}
}

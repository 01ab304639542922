// Package apptest starts issuer replicas for tests, in process, the way the issuer binary starts one.
package apptest

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/tokenwarden/tokenwarden/issuer/app"
)

// Replica is one running issuer.
type Replica struct {
	// Base is the URL the replica serves its endpoints at: http(s)://127.0.0.1:port.
	Base string
	// Metrics is the URL the replica serves /metrics at: http://127.0.0.1:port.
	Metrics string
	// Peer is the replica's peer address, host:port, when it forwards; "" otherwise.
	Peer string
	// Stop ends the replica and waits for it; later calls do nothing. Cleanup calls it too.
	Stop func()
}

// Start runs app.Run with o on a new loopback listener and waits until the replica serves its policies.
// ExternalURL "" means the replica's own address; Peers without a Listener get one on loopback. The replica
// stops when the test ends.
func Start(t testing.TB, cfg *rest.Config, o app.Options) *Replica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scheme := "http://"
	if o.TLSCertFile != "" {
		scheme = "https://"
	}
	base := scheme + ln.Addr().String()
	if o.ExternalURL == "" {
		o.ExternalURL = base
	}
	if o.ShutdownGrace == 0 {
		// More than net/http's 5 s: Shutdown closes a connection that never carried a request (one a client
		// dialled and then did not need) only once it is 5 s old, so a shorter grace can end before it does.
		o.ShutdownGrace = 10 * time.Second
	}
	metrics, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.Peers != nil && o.Peers.Listener == nil {
		peers := *o.Peers
		if peers.Listener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		o.Peers = &peers
	}
	ready := make(chan struct{})
	o.Listener, o.MetricsListener, o.Ready = ln, metrics, ready
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, o) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("replica stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("replica not ready within 60s")
	}
	var stopped atomic.Bool
	peer := ""
	if o.Peers != nil {
		peer = o.Peers.Listener.Addr().String()
	}
	r := &Replica{Base: base, Metrics: "http://" + metrics.Addr().String(), Peer: peer, Stop: func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replica %s: %v", base, err)
		}
	}}
	t.Cleanup(r.Stop)
	return r
}

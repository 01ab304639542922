package controllers

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

// peerKey reads the peer key Secret and checks its form: Opaque, labelled, a key of IssuerPeerKeySize
// bytes or more.
func peerKey(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatalf("get secret %s: %v", name, err)
	}
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("secret type %s; want %s", s.Type, corev1.SecretTypeOpaque)
	}
	if got := s.Labels[v1alpha1.LabelComponent]; got != ComponentIssuerPeer {
		t.Errorf("label %s: got %q; want %q", v1alpha1.LabelComponent, got, ComponentIssuerPeer)
	}
	if got := len(s.Data[IssuerPeerKeyField]); got < IssuerPeerKeySize {
		t.Fatalf("key of %d bytes; want at least %d", got, IssuerPeerKeySize)
	}
	return s
}

func TestTheControllerKeepsTheIssuerReplicasPeerKey(t *testing.T) {
	ns := env.Namespace(t)
	r := &IssuerPeerKeyReconciler{Client: env.Client, APIReader: env.Client, Namespace: ns, SecretName: "tokenwarden-issuer-peer"}
	ctx := context.Background()
	reconcile := func() {
		t.Helper()
		if _, err := r.Reconcile(ctx, reconcileRequest(ns, r.SecretName)); err != nil {
			t.Fatal(err)
		}
	}

	// None: one is created, of exactly 32 random bytes.
	reconcile()
	first := peerKey(t, ns, r.SecretName)
	if got := len(first.Data[IssuerPeerKeyField]); got != 32 {
		t.Fatalf("new key of %d bytes; want 32", got)
	}
	if bytes.Equal(first.Data[IssuerPeerKeyField], make([]byte, 32)) {
		t.Fatalf("new key is all zeros; want random bytes")
	}

	// A good key: left as it is, byte for byte and version for version.
	reconcile()
	if again := peerKey(t, ns, r.SecretName); again.ResourceVersion != first.ResourceVersion ||
		!bytes.Equal(again.Data[IssuerPeerKeyField], first.Data[IssuerPeerKeyField]) {
		t.Fatalf("a good key was rewritten (version %s -> %s)", first.ResourceVersion, again.ResourceVersion)
	}

	// A key of someone else's that is long enough, without the label: kept too.
	long := bytes.Repeat([]byte{7}, 48)
	brought := first.DeepCopy()
	brought.Labels, brought.Data = nil, map[string][]byte{IssuerPeerKeyField: long}
	if err := env.Client.Update(ctx, brought); err != nil {
		t.Fatal(err)
	}
	reconcile()
	s := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(brought), s); err != nil {
		t.Fatal(err)
	}
	if s.ResourceVersion != brought.ResourceVersion || !bytes.Equal(s.Data[IssuerPeerKeyField], long) {
		t.Fatalf("a 48-byte key was rewritten; want it kept")
	}

	// Too short, or missing: replaced with a new random key, other data kept.
	for name, data := range map[string]map[string][]byte{
		"a 31-byte key": {IssuerPeerKeyField: bytes.Repeat([]byte{1}, 31), "note": []byte("kept")},
		"no key":        {"note": []byte("kept")},
	} {
		s.Data = data
		if err := env.Client.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		reconcile()
		s = peerKey(t, ns, r.SecretName)
		if got := s.Data[IssuerPeerKeyField]; len(got) != 32 || bytes.Equal(got, first.Data[IssuerPeerKeyField]) {
			t.Fatalf("%s: got a key of %d bytes; want a new one of 32", name, len(got))
		}
		if got := string(s.Data["note"]); got != "kept" {
			t.Fatalf("%s: other data %q; want it kept", name, got)
		}
	}
}

// TestTheControllerRecreatesADeletedPeerKey runs the controller as its binary does (Setup, the narrow
// caches): the Secret appears on start, and again after it is deleted.
func TestTheControllerRecreatesADeletedPeerKey(t *testing.T) {
	ns := env.Namespace(t)
	name := "tokenwarden-issuer-peer"
	runManagerWith(t, ctrl.Options{}, Options{IssuerURL: "http://issuer.test", IssuerNamespace: ns, IssuerPeerSecret: name})
	ctx := context.Background()
	exists := func(notUID string) func() (bool, string) {
		return func() (bool, string) {
			s := &corev1.Secret{}
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
				return false, err.Error()
			}
			return s.UID != "" && string(s.UID) != notUID, fmt.Sprintf("secret %s has UID %s", name, s.UID)
		}
	}
	testenv.Eventually(t, 30*time.Second, exists(""))
	first := peerKey(t, ns, name)

	if err := env.Client.Delete(ctx, first, client.Preconditions{UID: &first.UID}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, exists(string(first.UID)))
	if again := peerKey(t, ns, name); bytes.Equal(again.Data[IssuerPeerKeyField], first.Data[IssuerPeerKeyField]) {
		t.Fatalf("the recreated Secret holds the deleted key; want a new one")
	}
}

package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// servedCert checks the serving Secret as a client would: the pair loads, the certificate verifies against
// the CA published in the ConfigMap for every host, and it returns the certificate.
func (f *fixture) servedCert(r *IssuerCertReconciler) *x509.Certificate {
	f.t.Helper()
	secret := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: r.Namespace, Name: r.SecretName}, secret); err != nil {
		f.t.Fatal(err)
	}
	if secret.Type != corev1.SecretTypeTLS {
		f.t.Fatalf("secret type %s; want %s, the form cert-manager and kubelet mounts use", secret.Type, corev1.SecretTypeTLS)
	}
	pair, err := tls.X509KeyPair(secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		f.t.Fatalf("serving pair: %v", err)
	}
	cert, _ := x509.ParseCertificate(pair.Certificate[0])
	cm := &corev1.ConfigMap{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: r.Namespace, Name: r.CAConfigMap}, cm); err != nil {
		f.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data["ca.crt"])) || string(secret.Data["ca.crt"]) != cm.Data["ca.crt"] {
		f.t.Fatalf("published CA %q, ca.crt in the Secret %q; want one CA in both", cm.Data["ca.crt"], secret.Data["ca.crt"])
	}
	for _, host := range r.Hosts {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, CurrentTime: f.clock.Now()}); err != nil {
			f.t.Fatalf("certificate for %s: %v", host, err)
		}
	}
	return cert
}

func TestTheControllerKeepsTheIssuersSelfSignedCertificate(t *testing.T) {
	f := newFixture(t)
	r := &IssuerCertReconciler{Client: env.Client, APIReader: env.Client, Clock: f.clock, Namespace: f.issuerNS,
		SecretName: "tokenwarden-issuer-tls", CAConfigMap: "tokenwarden-issuer-ca",
		Hosts: []string{"tokenwarden-issuer." + f.issuerNS + ".svc", "tokenwarden-issuer", "tokens.example.com"}}
	ctx := context.Background()
	res, err := r.Reconcile(ctx, reconcileRequest(f.issuerNS, r.SecretName))
	if err != nil {
		t.Fatal(err)
	}
	first := f.servedCert(r)
	if want := IssuerCertLifetime - issuerCertRenewal; res.RequeueAfter != want {
		t.Fatalf("requeue after %s; want %s, when a third of its life is left", res.RequeueAfter, want)
	}
	caSecret := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: f.issuerNS, Name: r.SecretName}, caSecret); err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(caSecret.Data["ca.crt"]); block == nil {
		t.Fatalf("no CA certificate beside the serving pair")
	}

	// Nothing due: nothing rewritten.
	before := f.secretVersion(f.issuerNS, r.SecretName)
	if _, err := r.Reconcile(ctx, reconcileRequest(f.issuerNS, r.SecretName)); err != nil {
		t.Fatal(err)
	}
	if after := f.secretVersion(f.issuerNS, r.SecretName); after != before {
		t.Fatalf("the certificate was rewritten with nothing due")
	}

	// At the renewal time: a new certificate, from the same CA (clients keep trusting it).
	f.clock.Step(res.RequeueAfter)
	if _, err := r.Reconcile(ctx, reconcileRequest(f.issuerNS, r.SecretName)); err != nil {
		t.Fatal(err)
	}
	renewed := f.servedCert(r)
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 || !renewed.NotAfter.After(first.NotAfter) {
		t.Fatalf("after the renewal time: serial %v, not after %v; want a new certificate", renewed.SerialNumber, renewed.NotAfter)
	}
	if renewed.Issuer.String() != first.Issuer.String() {
		t.Fatalf("renewed by CA %s; want the same CA %s", renewed.Issuer, first.Issuer)
	}

	// New hosts (a new external URL): issued again at once.
	r.Hosts = append(r.Hosts, "id.example.org")
	if _, err := r.Reconcile(ctx, reconcileRequest(f.issuerNS, r.SecretName)); err != nil {
		t.Fatal(err)
	}
	if got := f.servedCert(r); !slices.Contains(got.DNSNames, "id.example.org") {
		t.Fatalf("names %v; want the new host", got.DNSNames)
	}

	// A pair broken by hand is replaced.
	broken := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: f.issuerNS, Name: r.SecretName}, broken); err != nil {
		t.Fatal(err)
	}
	broken.Data[corev1.TLSPrivateKeyKey] = []byte("garbage")
	if err := env.Client.Update(ctx, broken); err != nil {
		t.Fatal(err)
	}
	f.clock.Step(time.Minute)
	if _, err := r.Reconcile(ctx, reconcileRequest(f.issuerNS, r.SecretName)); err != nil {
		t.Fatal(err)
	}
	f.servedCert(r)
}

func (f *fixture) secretVersion(ns, name string) string {
	f.t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		f.t.Fatal(err)
	}
	return s.ResourceVersion
}

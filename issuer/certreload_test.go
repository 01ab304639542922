package issuer

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/testenv"
)

func servedName(t *testing.T, r *CertReloader) string {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

func TestARenewedCertificateIsServedWithoutARestart(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Minute)
	certFile, keyFile := testenv.WriteSelfSigned(t, dir, "first.example", t0)
	r, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r.CheckEvery = 0
	if got := servedName(t, r); got != "first.example" {
		t.Fatalf("served %s; want first.example", got)
	}
	testenv.WriteSelfSigned(t, dir, "second.example", t0.Add(time.Second))
	if got := servedName(t, r); got != "second.example" {
		t.Fatalf("after renewal: served %s; want second.example", got)
	}
	// A half-written renewal (a key that does not match) keeps the last good pair in service.
	if err := os.WriteFile(keyFile, []byte("not yet"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(keyFile, t0.Add(2*time.Second), t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := servedName(t, r); got != "second.example" {
		t.Fatalf("during a broken renewal: served %s; want the last good second.example", got)
	}
}

func TestABadCertificatePairFailsAtStart(t *testing.T) {
	dir := t.TempDir()
	certFile := filepath.Join(dir, "tls.crt")
	if err := os.WriteFile(certFile, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewCertReloader(certFile, certFile); err == nil {
		t.Fatal("a junk pair was accepted")
	}
	if _, err := NewCertReloader(filepath.Join(dir, "missing.crt"), filepath.Join(dir, "missing.key")); err == nil {
		t.Fatal("missing files were accepted")
	}
}

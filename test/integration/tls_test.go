package integration

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/internal/testenv"
	"github.com/tokenwarden/tokenwarden/issuer/app"
)

// TestTheIssuerServesTLSAndPicksUpARenewedCertificate serves HTTPS from files laid out as a mounted
// kubernetes.io/tls Secret, then renews them in place, as cert-manager would: new connections get the new
// certificate while the replica keeps running.
func TestTheIssuerServesTLSAndPicksUpARenewedCertificate(t *testing.T) {
	f := newFixture(t, 0, nil)
	dir := t.TempDir()
	certFile, keyFile := testenv.WriteSelfSigned(t, dir, "first.issuer.test", time.Now().Add(-time.Minute))
	r := startReplicaWith(t, f.clock, true, func(o *app.Options) { o.TLSCertFile, o.TLSKeyFile = certFile, keyFile })
	if !strings.HasPrefix(r.base, "https://") {
		t.Fatalf("replica base %s; want https", r.base)
	}
	served := func() (string, error) {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(r.base, "https://"), &tls.Config{InsecureSkipVerify: true}) // we read the name, we do not trust it
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
	}

	pool := x509.NewCertPool()
	pem, err := os.ReadFile(certFile)
	must(t, err)
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "first.issuer.test"}}}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		resp, err := client.PostForm(r.base+f.path()+"/token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wonderland"}})
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	testenv.WriteSelfSigned(t, dir, "second.issuer.test", time.Now().Add(time.Minute))
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		name, err := served()
		if err != nil {
			return false, err.Error()
		}
		return name == "second.issuer.test", "served " + name
	})
}

package issuer

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// CertReloader serves a TLS certificate from files (a mounted kubernetes.io/tls Secret, as cert-manager
// writes it) and picks up a renewed one without a restart: on a handshake it re-reads the files when
// their modification time has changed, at most once per CheckEvery.
type CertReloader struct {
	CertFile, KeyFile string
	CheckEvery        time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

// NewCertReloader loads the pair once, so that a bad pair fails at start rather than at the first client.
func NewCertReloader(certFile, keyFile string) (*CertReloader, error) {
	r := &CertReloader{CertFile: certFile, KeyFile: keyFile, CheckEvery: time.Second}
	if _, err := r.GetCertificate(nil); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate implements tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.cert != nil && now.Sub(r.checked) < r.CheckEvery {
		return r.cert, nil
	}
	r.checked = now
	mod, err := latestModTime(r.CertFile, r.KeyFile)
	if err != nil {
		if r.cert != nil {
			return r.cert, nil // keep serving the last good pair while a renewal is being written
		}
		return nil, err
	}
	if r.cert != nil && mod.Equal(r.modTime) {
		return r.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(r.CertFile, r.KeyFile)
	if err != nil {
		if r.cert != nil {
			return r.cert, nil // a half-written renewal: the next check reads it again
		}
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	r.cert, r.modTime = &cert, mod
	return r.cert, nil
}

func latestModTime(files ...string) (time.Time, error) {
	var latest time.Time
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return time.Time{}, err
		}
		if fi.ModTime().After(latest) {
			latest = fi.ModTime()
		}
	}
	return latest, nil
}

package issuer_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/tokenwarden/tokenwarden/internal/login"
	"github.com/tokenwarden/tokenwarden/issuer"
)

// BenchmarkPasswordLogin times a password login through the server's handler, the way a guesser sees
// it: an unknown user (a comparison with the decoy hash), a wrong password for a known user (alternating
// in one loop, and each on its own), and for reference the right password and a wrong one for a user whose
// hash has another cost than most. The
// users Secret holds three hashes of cost 10 and one of cost 11, so the decoy has cost 10. Compare the
// first two: the decoy exists so that they take the same time.
//
//	go test -run '^$' -bench PasswordLogin -benchtime 40x -count 5 ./issuer/
func BenchmarkPasswordLogin(b *testing.B) {
	data := map[string][]byte{}
	for user, cost := range map[string]int{"alice": 10, "bob": 10, "carol": 10, "dave": 11} {
		h, err := bcrypt.GenerateFromPassword([]byte("wonderland"), cost)
		if err != nil {
			b.Fatal(err)
		}
		data[user] = h
	}
	users, err := login.New(data)
	if err != nil {
		b.Fatal(err)
	}
	unlimited := issuer.RateLimit{PerSecond: 1e9, Burst: 1 << 30}
	f := newFixture(b, options{ipRate: unlimited, userRate: unlimited})
	f.policy.Users = users
	h := f.server.Handler()
	serve := func(b *testing.B, body string, status int) {
		r := httptest.NewRequest(http.MethodPost, f.policy.Issuer+"/token", strings.NewReader(body))
		r.Header.Set("Content-Type", formType)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != status {
			b.Fatalf("got %d %s; want %d", w.Code, w.Body, status)
		}
	}
	// Alternating the two in one loop exposes them to the same load, which on a shared machine drifts
	// more between two benchmarks run one after the other than between the two kinds of login.
	b.Run("unknown user and wrong password, alternating", func(b *testing.B) {
		unknown, wrong := passwordForm("mallory", "guess").Encode(), passwordForm("alice", "guess").Encode()
		var tUnknown, tWrong time.Duration
		n := 0
		for b.Loop() {
			start := time.Now()
			serve(b, unknown, http.StatusBadRequest)
			mid := time.Now()
			serve(b, wrong, http.StatusBadRequest)
			tUnknown, tWrong = tUnknown+mid.Sub(start), tWrong+time.Since(mid)
			n++
		}
		b.ReportMetric(float64(tUnknown.Nanoseconds())/float64(n), "unknown-ns/login")
		b.ReportMetric(float64(tWrong.Nanoseconds())/float64(n), "wrong-ns/login")
		b.ReportMetric(float64(tUnknown)/float64(tWrong), "unknown/wrong")
	})
	for _, bm := range []struct {
		name, user, password string
		status               int
	}{
		{"unknown user", "mallory", "guess", http.StatusBadRequest},
		{"wrong password", "alice", "guess", http.StatusBadRequest},
		{"right password", "alice", "wonderland", http.StatusOK},
		{"wrong password, user of cost 11", "dave", "guess", http.StatusBadRequest},
	} {
		body := passwordForm(bm.user, bm.password).Encode()
		b.Run(bm.name, func(b *testing.B) {
			for b.Loop() {
				serve(b, body, bm.status)
			}
		})
	}
}

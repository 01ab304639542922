package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"k8s.io/utils/clock"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// boundIssuer is the iss of the bound server's tokens.
const boundIssuer = "http://bound.tokenwarden"

func boundCodec(alg v1alpha1.SigningAlgorithm) (*token.Codec, error) {
	k, err := keys.Generate(alg)
	if err != nil {
		return nil, err
	}
	set, err := keys.NewSet(alg, k.ID, []*keys.Key{k})
	if err != nil {
		return nil, err
	}
	return token.New(token.Policy{Issuer: boundIssuer, Audiences: []string{"api"}, AccessLifetime: 15 * time.Minute, Keys: set}, clock.RealClock{})
}

// BoundHandler is the bound of a refresh: the same crypto (one verify, two signs) behind a bare net/http
// handler with no state. GET /seed?n=N returns N refresh tokens to start from; POST /refresh takes a
// form with refresh_token and answers the two new tokens.
func BoundHandler(alg v1alpha1.SigningAlgorithm) (http.Handler, error) {
	codec, err := boundCodec(alg)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("GET /seed", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		now := time.Now()
		out := make([]string, 0, n)
		for i := range n {
			s := token.Session{ID: revocation.NewSessionID(i % 4), Subject: "user", AuthTime: now, Expiry: now.Add(time.Hour)}
			rt, _, err := codec.MintRefresh(s, 0, now)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			out = append(out, rt)
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /refresh", func(w http.ResponseWriter, r *http.Request) {
		claims, err := codec.VerifyRefresh(r.PostFormValue("refresh_token"))
		if err != nil {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		now := time.Now()
		s := claims.Session()
		at, _, err1 := codec.MintAccess(s, claims.Generation+1, now)
		rt, _, err2 := codec.MintRefresh(s, claims.Generation+1, now)
		if err1 != nil || err2 != nil {
			http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": at, "refresh_token": rt, "token_type": "Bearer", "expires_in": 900})
	})
	return mux, nil
}

// cryptoBounds measures, in this process on one goroutine, one refresh's crypto and one bcrypt (cost 10).
type cryptoBounds struct {
	refresh map[v1alpha1.SigningAlgorithm]time.Duration
	bcrypt  time.Duration
}

func measureCrypto(algs []v1alpha1.SigningAlgorithm) (cryptoBounds, error) {
	cb := cryptoBounds{refresh: map[v1alpha1.SigningAlgorithm]time.Duration{}}
	for _, alg := range algs {
		codec, err := boundCodec(alg)
		if err != nil {
			return cb, err
		}
		now := time.Now()
		s := token.Session{ID: revocation.NewSessionID(0), Subject: "user", AuthTime: now, Expiry: now.Add(time.Hour)}
		rt, _, err := codec.MintRefresh(s, 0, now)
		if err != nil {
			return cb, err
		}
		var failed error
		r := testing.Benchmark(func(b *testing.B) {
			for b.Loop() {
				c, err := codec.VerifyRefresh(rt)
				if err == nil {
					_, _, err = codec.MintAccess(c.Session(), 1, now)
				}
				if err == nil {
					_, _, err = codec.MintRefresh(c.Session(), 1, now)
				}
				if err != nil {
					failed = err
				}
			}
		})
		if failed != nil {
			return cb, fmt.Errorf("refresh crypto %s: %w", alg, failed)
		}
		cb.refresh[alg] = time.Duration(r.NsPerOp())
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("bench-password"), 10)
	if err != nil {
		return cb, err
	}
	r := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			_ = bcrypt.CompareHashAndPassword(hash, []byte("bench-password"))
		}
	})
	cb.bcrypt = time.Duration(r.NsPerOp())
	return cb, nil
}

package peer

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/cache"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// The peer protocol: one POST of a batch of decisions to DecidePath, signed with the peers' shared key
// (HMAC-SHA256 over the method, path, time, a fresh nonce and the body), answered with the outcomes in the
// same order, signed over the request's nonce and the answer's body. A request older or newer than
// maxSkew, or whose nonce was seen before, is refused, so a recorded request cannot be replayed; an answer
// that does not verify is not believed.
const (
	headerTime      = "Tokenwarden-Peer-Time"
	headerNonce     = "Tokenwarden-Peer-Nonce"
	headerSignature = "Tokenwarden-Peer-Signature"
	maxSkew         = 15 * time.Second
	maxBody         = 8 << 20
	maxOps          = 4096
)

// DecidePath is the peer port's one endpoint.
const DecidePath = "/peer/v1/decide"

// SignRequest adds to req, whose body is body, the credential a replica sends with key at now.
func SignRequest(req *http.Request, key, body []byte, now time.Time) error {
	_, err := sign(req, key, body, now)
	return err
}

// KeyMinBytes is the least length of the peer key.
const KeyMinBytes = 32

// Keys holds the peer key, and the one before it for a while after a change, so that replicas that see
// the new key at different moments still accept each other.
type Keys struct {
	mu       sync.RWMutex
	current  []byte
	previous []byte
}

// Set makes key the current one; the current one becomes the previous.
func (k *Keys) Set(key []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if bytes.Equal(key, k.current) {
		return
	}
	k.previous, k.current = k.current, bytes.Clone(key)
}

// Current is the key requests are signed with; nil until one is set.
func (k *Keys) Current() []byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current
}

func (k *Keys) all() [][]byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([][]byte, 0, 2)
	for _, key := range [][]byte{k.current, k.previous} {
		if len(key) >= KeyMinBytes {
			out = append(out, key)
		}
	}
	return out
}

func requestMAC(key []byte, method, path, stamp, nonce string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "tokenwarden-peer-request\n%s\n%s\n%s\n%s\n", method, path, stamp, nonce)
	m.Write(body)
	return m.Sum(nil)
}

func responseMAC(key []byte, nonce string, status int, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "tokenwarden-peer-response\n%s\n%d\n", nonce, status)
	m.Write(body)
	return m.Sum(nil)
}

// wireOp is one decision asked of the owner: exactly one of the three.
type wireOp struct {
	Refresh       *revocation.RefreshRequest       `json:"refresh,omitempty"`
	RevokeSession *revocation.RevokeSessionRequest `json:"revokeSession,omitempty"`
	RevokeSubject *revocation.RevokeSubjectRequest `json:"revokeSubject,omitempty"`
}

func (w *wireOp) place() (revocation.Place, bool) {
	switch {
	case w.Refresh != nil && w.RevokeSession == nil && w.RevokeSubject == nil:
		return w.Refresh.Place, true
	case w.Refresh == nil && w.RevokeSession != nil && w.RevokeSubject == nil:
		return w.RevokeSession.Place, true
	case w.Refresh == nil && w.RevokeSession == nil && w.RevokeSubject != nil:
		return w.RevokeSubject.Place, true
	}
	return revocation.Place{}, false
}

// wireResult is one outcome: a refresh's result, or an error by its code.
type wireResult struct {
	Refresh *revocation.RefreshResult `json:"refresh,omitempty"`
	Code    string                    `json:"code,omitempty"`
	Message string                    `json:"message,omitempty"`
}

// The error codes of wireResult, one per sentinel of revocation. Anything else reads as ErrUnavailable.
var codes = []struct {
	code string
	err  error
}{
	{"reuse", revocation.ErrReuse},
	{"revoked", revocation.ErrRevoked},
	{"expired", revocation.ErrExpired},
	{"unknown", revocation.ErrUnknownSession},
	{"full", revocation.ErrShardFull},
	{"unavailable", revocation.ErrUnavailable},
}

// errNotOwner is what an owner answers for a journal it does not (or no longer) own: nothing was decided.
var errNotOwner = fmt.Errorf("%w: the replica asked is not the journal's owner now (it is changing hands)", revocation.ErrUnavailable)

func encodeError(err error) wireResult {
	if err == nil {
		return wireResult{}
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return wireResult{Code: c.code, Message: err.Error()}
		}
	}
	return wireResult{Code: "unavailable", Message: err.Error()}
}

// remoteError is an error the owner decided; it reads as its sentinel.
type remoteError struct {
	sentinel error
	message  string
}

func (e *remoteError) Error() string { return e.message }
func (e *remoteError) Unwrap() error { return e.sentinel }

func decodeError(r wireResult) error {
	if r.Code == "" {
		return nil
	}
	for _, c := range codes {
		if c.code == r.Code {
			return &remoteError{sentinel: c.err, message: "the journal's owner: " + r.Message}
		}
	}
	return &remoteError{sentinel: revocation.ErrUnavailable, message: "the journal's owner: " + r.Message}
}

// nonces remembers the nonces of accepted requests for twice maxSkew: a request is accepted only within
// maxSkew of its time, so an older nonce cannot come back.
type nonces struct {
	seen *cache.LRUExpireCache
	mu   sync.Mutex
}

func newNonces() *nonces { return &nonces{seen: cache.NewLRUExpireCache(1 << 18)} }

// fresh records nonce and reports whether it was new.
func (n *nonces) fresh(nonce string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.seen.Get(nonce); ok {
		return false
	}
	n.seen.Add(nonce, struct{}{}, 2*maxSkew)
	return true
}

// sign adds the request's authentication headers and returns its nonce.
func sign(req *http.Request, key, body []byte, now time.Time) (string, error) {
	var raw [18]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	nonce := base64.RawURLEncoding.EncodeToString(raw[:])
	stamp := strconv.FormatInt(now.UnixMilli(), 10)
	req.Header.Set(headerTime, stamp)
	req.Header.Set(headerNonce, nonce)
	req.Header.Set(headerSignature, base64.RawURLEncoding.EncodeToString(requestMAC(key, req.Method, req.URL.Path, stamp, nonce, body)))
	return nonce, nil
}

// verify checks a request's authentication and returns the key it was signed with.
func verify(r *http.Request, keys [][]byte, body []byte, now time.Time, seen *nonces) ([]byte, error) {
	stamp, nonce, sig := r.Header.Get(headerTime), r.Header.Get(headerNonce), r.Header.Get(headerSignature)
	if stamp == "" || nonce == "" || sig == "" {
		return nil, errors.New("no peer credential")
	}
	ms, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return nil, errors.New("malformed peer time")
	}
	if d := now.Sub(time.UnixMilli(ms)); d > maxSkew || d < -maxSkew {
		return nil, fmt.Errorf("peer time is %s off", d.Round(time.Millisecond))
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return nil, errors.New("malformed peer signature")
	}
	for _, key := range keys {
		if hmac.Equal(got, requestMAC(key, r.Method, r.URL.Path, stamp, nonce, body)) {
			if !seen.fresh(nonce) {
				return nil, errors.New("replayed peer request")
			}
			return key, nil
		}
	}
	return nil, errors.New("wrong peer signature")
}

// Decider is what the owner applies forwarded decisions to: its local store.
type Decider interface {
	Refresh(ctx context.Context, req revocation.RefreshRequest) (revocation.RefreshResult, error)
	RevokeSession(ctx context.Context, req revocation.RevokeSessionRequest) error
	RevokeSubject(ctx context.Context, req revocation.RevokeSubjectRequest) error
}

// Server answers the peer port: it authenticates the request, then decides each operation on the local
// store if this replica owns the operation's journal now, and refuses it (deciding nothing) otherwise.
type Server struct {
	Keys    *Keys
	Owners  interface{ Owned(journal string) bool }
	Local   Decider
	Now     func() time.Time
	Metrics *Metrics
	// Namespace is the issuer's: decisions for any other namespace's objects are refused.
	Namespace string
	nonces    *nonces
	once      sync.Once
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.once.Do(func() {
		s.nonces = newNonces()
		if s.Now == nil {
			s.Now = time.Now
		}
	})
	if r.Method != http.MethodPost || r.URL.Path != DecidePath {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, "request body too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	key, err := verify(r, s.Keys.all(), body, s.Now(), s.nonces)
	if err != nil {
		s.Metrics.refused()
		http.Error(w, "peer authentication failed: "+err.Error(), http.StatusUnauthorized)
		return
	}
	var ops []wireOp
	if err := json.Unmarshal(body, &ops); err != nil || len(ops) > maxOps {
		http.Error(w, "malformed batch", http.StatusBadRequest)
		return
	}
	results := make([]wireResult, len(ops))
	var wg sync.WaitGroup
	for i := range ops {
		wg.Go(func() { results[i] = s.decide(r.Context(), &ops[i]) })
	}
	wg.Wait()
	s.Metrics.received(len(ops))
	out, err := json.Marshal(results)
	if err != nil {
		http.Error(w, "encode", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(headerSignature, base64.RawURLEncoding.EncodeToString(responseMAC(key, r.Header.Get(headerNonce), http.StatusOK, out)))
	_, _ = w.Write(out)
}

func (s *Server) decide(ctx context.Context, op *wireOp) wireResult {
	place, ok := op.place()
	if !ok {
		return wireResult{Code: "unavailable", Message: "an operation must be exactly one of refresh, revokeSession and revokeSubject"}
	}
	if place.Policy.Namespace != s.Namespace {
		return wireResult{Code: "unavailable", Message: "not this issuer's namespace"}
	}
	if !s.Owners.Owned(revocation.JournalName(place.Policy.Name)) {
		return encodeError(errNotOwner)
	}
	switch {
	case op.Refresh != nil:
		res, err := s.Local.Refresh(ctx, *op.Refresh)
		if err != nil {
			return encodeError(err)
		}
		return wireResult{Refresh: &res}
	case op.RevokeSession != nil:
		return encodeError(s.Local.RevokeSession(ctx, *op.RevokeSession))
	default:
		return encodeError(s.Local.RevokeSubject(ctx, *op.RevokeSubject))
	}
}

// post sends one signed batch to the peer at address and returns its verified outcomes.
func post(ctx context.Context, hc *http.Client, address string, key []byte, ops []wireOp, now time.Time) ([]wireResult, error) {
	body, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+address+DecidePath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	nonce, err := sign(req, key, body, now)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("peer %s answered %d: %s", address, resp.StatusCode, bytes.TrimSpace(out[:min(len(out), 200)]))
	}
	sig, err := base64.RawURLEncoding.DecodeString(resp.Header.Get(headerSignature))
	if err != nil || !hmac.Equal(sig, responseMAC(key, nonce, resp.StatusCode, out)) {
		return nil, fmt.Errorf("peer %s: the answer's signature does not verify", address)
	}
	var results []wireResult
	if err := json.Unmarshal(out, &results); err != nil {
		return nil, fmt.Errorf("peer %s: %w", address, err)
	}
	if len(results) != len(ops) {
		return nil, fmt.Errorf("peer %s answered %d outcomes for %d operations", address, len(results), len(ops))
	}
	return results, nil
}

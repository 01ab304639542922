package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// counting is a Decider that counts what it is asked and refuses every refresh as reuse.
type counting struct{ calls atomic.Int64 }

func (c *counting) Refresh(context.Context, revocation.RefreshRequest) (revocation.RefreshResult, error) {
	c.calls.Add(1)
	return revocation.RefreshResult{}, revocation.ErrReuse
}

func (c *counting) RevokeSession(context.Context, revocation.RevokeSessionRequest) error {
	c.calls.Add(1)
	return nil
}

func (c *counting) RevokeSubject(context.Context, revocation.RevokeSubjectRequest) error {
	c.calls.Add(1)
	return nil
}

type owning bool

func (o owning) Owned(string) bool { return bool(o) }

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeyMinBytes) }

func refreshOp() wireOp {
	return wireOp{Refresh: &revocation.RefreshRequest{Place: revocation.Place{Policy: types.NamespacedName{Namespace: "tw", Name: "p"}}, SessionID: "s"}}
}

func TestThePeerPortDecidesOnlyForAuthenticatedPeersAndOwnedJournals(t *testing.T) {
	keys := &Keys{}
	keys.Set(key(1))
	local := &counting{}
	srv := &Server{Keys: keys, Owners: owning(true), Local: local, Namespace: "tw"}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	address := ts.Listener.Addr().String()
	ops := []wireOp{refreshOp()}

	if _, err := post(context.Background(), ts.Client(), address, key(2), ops, time.Now()); err == nil {
		t.Fatal("a batch signed with another key was answered; want 401")
	}
	if _, err := post(context.Background(), ts.Client(), address, key(1), ops, time.Now().Add(-time.Minute)); err == nil {
		t.Fatal("a batch signed a minute ago was answered; want 401")
	}
	resp, err := http.Post(ts.URL+DecidePath, "application/json", bytes.NewReader([]byte(`[{"refresh":{}}]`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a batch without a credential: %d; want 401", resp.StatusCode)
	}
	if n := local.calls.Load(); n != 0 {
		t.Fatalf("%d decisions made for unauthenticated batches; want 0", n)
	}

	results, err := post(context.Background(), ts.Client(), address, key(1), ops, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeError(results[0]); !errors.Is(err, revocation.ErrReuse) {
		t.Fatalf("the owner's refusal came back as %v; want ErrReuse", err)
	}
	if n := local.calls.Load(); n != 1 {
		t.Fatalf("%d decisions; want 1", n)
	}

	// After a key change, the previous key is still accepted (replicas see the new key at different times).
	keys.Set(key(3))
	if _, err := post(context.Background(), ts.Client(), address, key(1), ops, time.Now()); err != nil {
		t.Fatalf("the previous key after a change: %v", err)
	}

	// A replica that no longer owns the journal decides nothing and says so.
	srv.Owners = owning(false)
	results, err = post(context.Background(), ts.Client(), address, key(3), ops, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeError(results[0]); !errors.Is(err, revocation.ErrUnavailable) {
		t.Fatalf("a journal not owned: %v; want ErrUnavailable", err)
	}
	if n := local.calls.Load(); n != 2 {
		t.Fatalf("%d decisions; want 2 (none for the journal not owned)", n)
	}
}

func TestARequestIsAcceptedOnce(t *testing.T) {
	keys := [][]byte{key(1)}
	body := []byte(`[]`)
	req := httptest.NewRequest(http.MethodPost, DecidePath, bytes.NewReader(body))
	if err := SignRequest(req, key(1), body, time.Now()); err != nil {
		t.Fatal(err)
	}
	seen := newNonces()
	if _, err := verify(req, keys, body, time.Now(), seen); err != nil {
		t.Fatalf("first: %v", err)
	}
	if _, err := verify(req, keys, body, time.Now(), seen); err == nil {
		t.Fatal("the same request again was accepted; want it refused as a replay")
	}
}

func TestAnAnswerThatDoesNotVerifyIsNotBelieved(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(headerSignature, "AAAA")
		fmt.Fprint(w, `[{"refresh":{"Generation":7}}]`)
	}))
	defer ts.Close()
	if _, err := post(context.Background(), ts.Client(), ts.Listener.Addr().String(), key(1), []wireOp{refreshOp()}, time.Now()); err == nil {
		t.Fatal("an unsigned answer was believed")
	}
}

func member(identity string) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: MemberLeaseName(identity), ResourceVersion: "1", Labels: map[string]string{LabelLeaseRole: RoleMember}},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(identity), LeaseDurationSeconds: ptr.To(int32(10))},
	}
}

func TestEveryReplicaPlansTheSameEvenSpread(t *testing.T) {
	ids := []string{"10.0.0.1:8444", "10.0.0.2:8444", "10.0.0.3:8444"}
	journals := make([]string, 10)
	for i := range journals {
		journals[i] = fmt.Sprintf("p%d-revocations-journal", i)
	}
	var plans []map[string]string
	for _, self := range ids {
		o := NewOwners(OwnersConfig{Identity: self})
		for _, id := range ids {
			o.see(member(id))
		}
		plans = append(plans, o.plan(journals))
	}
	load := map[string]int{}
	for _, j := range journals {
		for _, p := range plans[1:] {
			if p[j] != plans[0][j] {
				t.Fatalf("journal %s: replicas plan %s and %s", j, plans[0][j], p[j])
			}
		}
		load[plans[0][j]]++
	}
	for _, id := range ids {
		if load[id] < 3 || load[id] > 4 {
			t.Fatalf("loads %v; want 3 or 4 journals each", load)
		}
	}
	// A replica gone: its journals go to the others.
	o := NewOwners(OwnersConfig{Identity: ids[0]})
	for _, id := range ids[:2] {
		o.see(member(id))
	}
	after := o.plan(journals)
	for _, j := range journals {
		if after[j] == ids[2] {
			t.Fatalf("journal %s planned for the replica that is gone", j)
		}
	}
}

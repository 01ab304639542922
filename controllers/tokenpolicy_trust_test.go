package controllers

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// reconcileRefused runs one pass that is expected to report an unusable Secret (a terminal error).
func (f *fixture) reconcileRefused(name string) {
	f.t.Helper()
	_, err := f.r.Reconcile(context.Background(), reconcileRequest(f.ns, name))
	if !errors.Is(err, reconcile.TerminalError(nil)) {
		f.t.Fatalf("reconcile %s: got %v; want a terminal error (only a change to the Secret can fix it)", name, err)
	}
}

// condition is policy name's condition t, failing the test when it is absent.
func (f *fixture) condition(name, t string) metav1.Condition {
	f.t.Helper()
	c := findCondition(f.get(name), t)
	if c == nil {
		f.t.Fatalf("policy %s has no %s condition", name, t)
	}
	return *c
}

func (f *fixture) warned(reason string) bool {
	for _, e := range f.drainEvents() {
		if strings.HasPrefix(e, "Warning") && strings.Contains(e, reason) {
			return true
		}
	}
	return false
}

// TestAPolicyCannotUseAnotherPolicysSecrets is the attack of a namespace user who may create TokenPolicies:
// a second policy that names the first one's generated signing keys (with lifetimes and a rotation interval
// that would rotate them on its own schedule) and its users Secret. It is refused, says why, materialises
// nothing for the issuer, and leaves the first policy's Secrets exactly as they were.
func TestAPolicyCannotUseAnotherPolicysSecrets(t *testing.T) {
	f := newFixture(t)
	f.usersSecret("payments-users", "payments", map[string][]byte{"alice": hash(t, "wonderland", bcrypt.DefaultCost)})
	f.policy("payments", func(s *v1alpha1.TokenPolicySpec) { s.Login.PasswordSecretName = "payments-users" })
	f.reconcile("payments")
	keysBefore, usersBefore := f.secret("payments-signing-keys"), f.secret("payments-users")

	f.policy("rogue", func(s *v1alpha1.TokenPolicySpec) {
		s.AccessToken.Lifetime = metav1.Duration{Duration: 30 * time.Second}
		s.RefreshToken.Lifetime = metav1.Duration{Duration: time.Minute}
		s.Signing.SecretName = "payments-signing-keys"
		s.Signing.RotationInterval = &metav1.Duration{Duration: 61 * time.Second}
		s.Login.PasswordSecretName = "payments-users"
	})
	for range 5 { // well past rogue's rotation interval and the retention of any key it could retire
		f.reconcileRefused("rogue")
		f.clock.Step(2 * time.Minute)
	}

	keysReady := f.condition("rogue", v1alpha1.ConditionKeysReady)
	if keysReady.Status != metav1.ConditionFalse || keysReady.Reason != v1alpha1.ReasonSecretNotPermitted ||
		!strings.Contains(keysReady.Message, "payments-signing-keys") || !strings.Contains(keysReady.Message, v1alpha1.AnnotationAllowedPolicies) {
		t.Errorf("rogue KeysReady: %+v; want False, %s, naming the Secret and the annotation", keysReady, v1alpha1.ReasonSecretNotPermitted)
	}
	loginReady := f.condition("rogue", v1alpha1.ConditionLoginReady)
	if loginReady.Status != metav1.ConditionFalse || loginReady.Reason != v1alpha1.ReasonSecretNotPermitted ||
		!strings.Contains(loginReady.Message, "payments-users") || !strings.Contains(loginReady.Message, v1alpha1.AnnotationAllowedPolicies+": rogue") {
		t.Errorf("rogue LoginReady: %+v; want False, %s, naming the Secret and the annotation to add", loginReady, v1alpha1.ReasonSecretNotPermitted)
	}
	if ready := f.condition("rogue", v1alpha1.ConditionReady); ready.Status != metav1.ConditionFalse {
		t.Errorf("rogue Ready: %+v; want False", ready)
	}
	events := strings.Join(f.drainEvents(), "\n")
	for _, reason := range []string{v1alpha1.EventSecretNotPermitted, v1alpha1.EventInvalidUsersSecret} {
		if !strings.Contains(events, "Warning "+reason) {
			t.Errorf("no Warning %s event among:\n%s", reason, events)
		}
	}
	rogue := f.get("rogue")
	f.noIssuerSecret(rogue.IssuerKeysSecretName())
	f.noIssuerSecret(rogue.IssuerUsersSecretName())
	if rogue.Status.ActiveKeyID != "" || len(rogue.Status.Keys) != 0 {
		t.Errorf("rogue status keys %q %v; want none", rogue.Status.ActiveKeyID, rogue.Status.Keys)
	}

	keysAfter, usersAfter := f.secret("payments-signing-keys"), f.secret("payments-users")
	if keysAfter.ResourceVersion != keysBefore.ResourceVersion || !maps.EqualFunc(keysAfter.Data, keysBefore.Data, slices.Equal) ||
		!maps.Equal(keysAfter.Annotations, keysBefore.Annotations) {
		t.Errorf("payments' signing keys changed under rogue (resourceVersion %s -> %s); want them byte for byte as they were",
			keysBefore.ResourceVersion, keysAfter.ResourceVersion)
	}
	if usersAfter.ResourceVersion != usersBefore.ResourceVersion {
		t.Errorf("payments' users Secret changed under rogue")
	}
	// And payments itself is still served as before.
	f.reconcile("payments")
	if ready := f.condition("payments", v1alpha1.ConditionReady); ready.Status != metav1.ConditionTrue {
		t.Errorf("payments Ready: %+v; want True", ready)
	}

	// The owner of a Secret can share it on purpose: the annotation makes rogue use the keys as they are.
	shared := f.secret("payments-signing-keys")
	shared.Annotations[v1alpha1.AnnotationAllowedPolicies] = "rogue"
	if err := env.Client.Update(context.Background(), shared); err != nil {
		t.Fatal(err)
	}
	sharedVersion := shared.ResourceVersion
	f.reconcileRefused("rogue") // the users Secret still does not allow it
	if c := f.condition("rogue", v1alpha1.ConditionKeysReady); c.Status != metav1.ConditionTrue {
		t.Errorf("rogue KeysReady after the annotation: %+v; want True", c)
	}
	f.clock.Step(time.Hour)
	f.reconcileRefused("rogue")
	if got := f.secret("payments-signing-keys"); got.ResourceVersion != sharedVersion || !maps.EqualFunc(got.Data, keysBefore.Data, slices.Equal) {
		t.Errorf("rogue rotated a Secret it was only allowed to use")
	}
}

func TestTheAllowedPoliciesAnnotationIsAListOfNames(t *testing.T) {
	tests := map[string]struct {
		annotation string
		want       bool
	}{
		"the name alone":              {"payments", true},
		"among others, with spaces":   {"billing, payments ,audit", true},
		"absent":                      {"", false},
		"a name that merely contains": {"payments-v2,xpayments", false},
		"a wildcard is not a name":    {"*", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := v1alpha1.AllowsPolicy(tc.annotation, "payments"); got != tc.want {
				t.Fatalf("AllowsPolicy(%q, payments) = %v; want %v", tc.annotation, got, tc.want)
			}
		})
	}
}

// usersSecret creates a users Secret as a platform team would: entries and the annotation naming the
// policies that may use it ("" for none).
func (f *fixture) usersSecret(name, allowed string, data map[string][]byte) *corev1.Secret {
	f.t.Helper()
	var annotations map[string]string
	if allowed != "" {
		annotations = map[string]string{v1alpha1.AnnotationAllowedPolicies: allowed}
	}
	return f.userSecret(name, nil, annotations, data)
}

func hash(t *testing.T, password string, cost int) []byte {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestAUsersSecretThatCannotBeUsedIsNeverReadyUntilFixed(t *testing.T) {
	good := hash(t, "wonderland", bcrypt.DefaultCost)
	// A well-formed hash of cost 31 (nobody computes one to test: a cost-31 comparison takes days).
	cost31 := []byte("$2a$31$" + strings.Repeat("a", 53))
	tests := map[string]struct {
		create  bool
		allowed string
		data    map[string][]byte
		reason  string
		want    []string // in the condition's message
	}{
		"missing": {
			reason: v1alpha1.ReasonSecretNotFound, want: []string{"users Secret users does not exist", v1alpha1.AnnotationAllowedPolicies + ": login"},
		},
		"not allowing the policy": {
			create: true, allowed: "other", data: map[string][]byte{"alice": good},
			reason: v1alpha1.ReasonSecretNotPermitted, want: []string{"does not allow this policy", v1alpha1.AnnotationAllowedPolicies + ": login"},
		},
		"a value that is not a bcrypt hash": {
			create: true, allowed: "login", data: map[string][]byte{"alice": good, "bob": []byte("hunter2")},
			reason: v1alpha1.ReasonSecretMalformed, want: []string{`entry "bob" is not a bcrypt hash`},
		},
		"a hash of cost 31": {
			create: true, allowed: "login", data: map[string][]byte{"alice": good, "carol": cost31},
			reason: v1alpha1.ReasonSecretMalformed, want: []string{`entry "carol" has bcrypt cost 31`, "cost 10 to 14"},
		},
		"a hash of cost 4": {
			create: true, allowed: "login", data: map[string][]byte{"dave": hash(t, "x", bcrypt.MinCost)},
			reason: v1alpha1.ReasonSecretMalformed, want: []string{`entry "dave" has bcrypt cost 4`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			var secret *corev1.Secret
			if tc.create {
				secret = f.usersSecret("users", tc.allowed, tc.data)
			}
			f.policy("login", func(s *v1alpha1.TokenPolicySpec) { s.Login.PasswordSecretName = "users" })
			f.reconcileRefused("login")
			c := f.condition("login", v1alpha1.ConditionLoginReady)
			for _, want := range tc.want {
				if c.Status != metav1.ConditionFalse || c.Reason != tc.reason || !strings.Contains(c.Message, want) {
					t.Fatalf("LoginReady: %+v; want False, %s, with %q", c, tc.reason, want)
				}
			}
			if strings.Contains(c.Message, string(good)) || strings.Contains(c.Message, "hunter2") {
				t.Fatalf("LoginReady's message shows a secret value: %s", c.Message)
			}
			if r := f.condition("login", v1alpha1.ConditionReady); r.Status != metav1.ConditionFalse || r.Reason != v1alpha1.ReasonLoginNotReady {
				t.Fatalf("Ready: %+v; want False, %s", r, v1alpha1.ReasonLoginNotReady)
			}
			if !f.warned(v1alpha1.EventInvalidUsersSecret) {
				t.Errorf("no Warning %s event", v1alpha1.EventInvalidUsersSecret)
			}
			p := f.get("login")
			f.noIssuerSecret(p.IssuerUsersSecretName())
			// The keys are the policy's own: refresh and token exchange go on being served.
			f.issuerSecret(p.IssuerKeysSecretName())

			// Fixed, with no label, it is Ready on the next pass and handed to the issuer.
			fixed := map[string][]byte{"alice": good}
			if secret == nil {
				secret = f.usersSecret("users", "login", fixed)
			} else {
				secret.Annotations = map[string]string{v1alpha1.AnnotationAllowedPolicies: "login"}
				secret.Data = fixed
				if err := env.Client.Update(context.Background(), secret); err != nil {
					t.Fatal(err)
				}
			}
			f.reconcile("login")
			if r := f.condition("login", v1alpha1.ConditionReady); r.Status != metav1.ConditionTrue {
				t.Fatalf("Ready after the fix: %+v; want True", r)
			}
			if got := f.issuerSecret(p.IssuerUsersSecretName()); !maps.EqualFunc(got.Data, fixed, slices.Equal) {
				t.Fatalf("materialised users: %v; want the fixed entries", slices.Collect(maps.Keys(got.Data)))
			}

			// Deleted again: password login stops rather than going on with the last copy.
			if err := env.Client.Delete(context.Background(), secret); err != nil {
				t.Fatal(err)
			}
			f.reconcileRefused("login")
			f.noIssuerSecret(p.IssuerUsersSecretName())
		})
	}
}

func TestDeletingAPolicyRemovesWhatWasMaterialisedForIt(t *testing.T) {
	f := newFixture(t)
	f.usersSecret("users", "doomed", map[string][]byte{"alice": hash(t, "wonderland", bcrypt.DefaultCost)})
	f.policy("doomed", func(s *v1alpha1.TokenPolicySpec) { s.Login.PasswordSecretName = "users"; s.Revocation.Shards = 3 })
	f.policy("kept", nil)
	f.reconcile("doomed")
	f.reconcile("kept")
	p := f.get("doomed")
	if !slices.Contains(p.Finalizers, v1alpha1.FinalizerMaterialised) {
		t.Fatalf("finalizers %v; want %s", p.Finalizers, v1alpha1.FinalizerMaterialised)
	}
	// A segment the issuer sealed: it too goes.
	journal := f.materialised("doomed", "revocations-journal")
	seg := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: f.issuerNS, Name: f.handle("doomed").SegmentName(1), Labels: map[string]string{}}}
	maps.Copy(seg.Labels, journal.Labels)
	seg.Labels[v1alpha1.LabelRevocationRole] = v1alpha1.RevocationRoleSegment
	if err := env.Client.Create(context.Background(), seg); err != nil {
		t.Fatal(err)
	}
	if got := f.materialisedFor("doomed"); got != 3+1+1+2 {
		t.Fatalf("objects materialised for doomed: %d; want 3 bases, the journal, a segment, keys and users", got)
	}

	if err := env.Client.Delete(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	f.reconcile("doomed")
	if got := f.materialisedFor("doomed"); got != 0 {
		t.Fatalf("objects left in the issuer's namespace after deletion: %d; want none", got)
	}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(p), &v1alpha1.TokenPolicy{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the policy after its finalizer ran: %v; want it gone", err)
	}
	if got := f.materialisedFor("kept"); got == 0 {
		t.Fatalf("the other policy's objects went too")
	}
}

// materialisedFor counts the Secrets and ConfigMaps of the issuer's namespace labelled as made for policy.
func (f *fixture) materialisedFor(policy string) int {
	f.t.Helper()
	of := client.MatchingLabels{v1alpha1.LabelPolicyNamespace: f.ns, v1alpha1.LabelPolicy: policy}
	var secrets corev1.SecretList
	var cms corev1.ConfigMapList
	if err := env.Client.List(context.Background(), &secrets, client.InNamespace(f.issuerNS), of); err != nil {
		f.t.Fatal(err)
	}
	if err := env.Client.List(context.Background(), &cms, client.InNamespace(f.issuerNS), of); err != nil {
		f.t.Fatal(err)
	}
	return len(secrets.Items) + len(cms.Items)
}

// TestAnUpgradeMovesEveryRevocationIntoTheIssuersNamespace starts from the layout before the issuer was
// confined: revocation objects beside the policy, owned by it, as issuers of that version wrote them (a
// base, a sealed segment and the journal, each holding a decision). The controller moves every record into
// the issuer's namespace before it creates the journal there, and removes the old objects.
func TestAnUpgradeMovesEveryRevocationIntoTheIssuersNamespace(t *testing.T) {
	f := newFixture(t)
	p := f.policy("upgraded", func(s *v1alpha1.TokenPolicySpec) { s.Revocation.Shards = 2 })
	now := f.clock.Now()
	inBase, inSegment, inJournal, active := revocation.NewSessionID(0), revocation.NewSessionID(1), revocation.NewSessionID(1), revocation.NewSessionID(0)
	revoked := func(sid string) string {
		return revocation.EncodeSession(revocation.Session{Subject: "alice", Generation: 3, Rotated: now, Expiry: now.Add(time.Hour),
			State: revocation.Revoked, Reason: revocation.ReasonLogout, RevokedAt: &now})
	}
	legacy := func(name string, role string, data map[string]string) {
		t.Helper()
		labels := map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelPolicy: "upgraded",
			v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}
		if role != "" {
			labels[v1alpha1.LabelRevocationRole] = role
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(p, v1alpha1.GroupVersion.WithKind("TokenPolicy"))}}, Data: data}
		if err := env.Client.Create(context.Background(), cm); err != nil {
			t.Fatal(err)
		}
	}
	legacy("upgraded-revocations-0", "", map[string]string{revocation.SessionKey(inBase): revoked(inBase), "fold": "1",
		revocation.SessionKey(active): revocation.EncodeSession(revocation.Session{Subject: "bob", Generation: 2, Rotated: now, Expiry: now.Add(time.Hour), State: revocation.Active})})
	legacy("upgraded-revocations-1", "", map[string]string{"fold": "1"})
	legacy("upgraded-revocations-seg-2", v1alpha1.RevocationRoleSegment, map[string]string{revocation.SessionKey(inSegment): revoked(inSegment)})
	legacy("upgraded-revocations-journal", "", map[string]string{"fold": "2", revocation.SessionKey(inJournal): revoked(inJournal),
		revocation.SubjectKey("carol"): revocation.EncodeSubject(revocation.Subject{Subject: "carol", RevokedBefore: now, Expiry: now.Add(time.Hour)})})

	f.reconcile("upgraded")

	h := f.handle("upgraded")
	objs, err := h.List(context.Background(), env.Client)
	if err != nil {
		t.Fatal(err)
	}
	if objs.Journal == nil || len(objs.Bases) != 2 {
		t.Fatalf("after the upgrade: journal %v, %d bases; want both in the issuer's namespace", objs.Journal != nil, len(objs.Bases))
	}
	for _, sid := range []string{inBase, inSegment, inJournal} {
		rec, err := revocation.DecodeSession(f.records(h.BaseName(revocation.SessionShard(sid)))[revocation.SessionKey(sid)])
		if err != nil || rec.State != revocation.Revoked {
			t.Errorf("session %s after the upgrade: %+v, %v; want it still revoked", sid, rec, err)
		}
	}
	if rec, err := revocation.DecodeSession(f.records(h.BaseName(0))[revocation.SessionKey(active)]); err != nil || rec.Generation != 2 {
		t.Errorf("bob's active session after the upgrade: %+v, %v; want generation 2 kept", rec, err)
	}
	marked := false
	for i := range 2 {
		_, marked = f.records(h.BaseName(i))[revocation.SubjectKey("carol")]
		if marked {
			break
		}
	}
	if !marked {
		t.Errorf("carol's subject-wide revocation was lost in the upgrade")
	}
	var left corev1.ConfigMapList
	if err := env.Client.List(context.Background(), &left, client.InNamespace(f.ns), client.MatchingLabels{v1alpha1.LabelComponent: v1alpha1.ComponentRevocations}); err != nil {
		t.Fatal(err)
	}
	if len(left.Items) != 0 {
		t.Errorf("%d revocation objects left beside the policy; want them gone once moved", len(left.Items))
	}
	if !slices.ContainsFunc(f.drainEvents(), func(e string) bool { return strings.Contains(e, v1alpha1.EventRevocationsMoved) }) {
		t.Errorf("no %s event", v1alpha1.EventRevocationsMoved)
	}
}

// TestAnUpgradeStartsOverWhenAnIssuerOfThePreviousLayoutDecidesMeanwhile: the previous journal is deleted
// only in the version whose records were moved, so a decision written after the move is moved too.
func TestAnUpgradeStartsOverWhenAnIssuerOfThePreviousLayoutDecidesMeanwhile(t *testing.T) {
	f := newFixture(t)
	p := f.policy("racing", func(s *v1alpha1.TokenPolicySpec) { s.Revocation.Shards = 1 })
	now := f.clock.Now()
	journal := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "racing-revocations-journal",
		Labels:          map[string]string{v1alpha1.LabelPolicy: "racing", v1alpha1.LabelComponent: v1alpha1.ComponentRevocations},
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(p, v1alpha1.GroupVersion.WithKind("TokenPolicy"))}}}
	if err := env.Client.Create(context.Background(), journal); err != nil {
		t.Fatal(err)
	}
	late := revocation.NewSessionID(0)
	// An issuer of the previous layout writes between the controller's read of the journal and its
	// deletion: the reader below is the controller's, and it lets one write through after the first read.
	f.r.Revocations.Reader = &writeAfterRead{Reader: env.Client, name: journal.Name, write: func() {
		j := &corev1.ConfigMap{}
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(journal), j); err != nil {
			t.Error(err)
			return
		}
		j.Data = map[string]string{revocation.SessionKey(late): revocation.EncodeSession(revocation.Session{Subject: "alice", Generation: 1,
			Rotated: now, Expiry: now.Add(time.Hour), State: revocation.Revoked, Reason: revocation.ReasonLogout, RevokedAt: &now})}
		if err := env.Client.Update(context.Background(), j); err != nil {
			t.Error(err)
		}
	}}
	if _, err := f.r.Reconcile(context.Background(), reconcileRequest(f.ns, "racing")); err == nil || !strings.Contains(err.Error(), "changed while its records were moved") {
		t.Fatalf("first pass: got %v; want the move to start over", err)
	}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: f.issuerNS, Name: f.handle("racing").JournalName()}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Fatalf("journal in the issuer's namespace after a failed move: %v; want none yet, so that no issuer decides", err)
	}
	f.reconcile("racing")
	rec, err := revocation.DecodeSession(f.records(f.handle("racing").BaseName(0))[revocation.SessionKey(late)])
	if err != nil || rec.State != revocation.Revoked {
		t.Fatalf("the decision written during the move: %+v, %v; want it moved too", rec, err)
	}
}

// writeAfterRead is a reader that, right after the first Get of ConfigMap name, calls write once.
type writeAfterRead struct {
	client.Reader
	name  string
	write func()
	done  bool
}

func (r *writeAfterRead) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := r.Reader.Get(ctx, key, obj, opts...)
	if _, ok := obj.(*corev1.ConfigMap); ok && key.Name == r.name && !r.done {
		r.done = true
		r.write()
	}
	return err
}

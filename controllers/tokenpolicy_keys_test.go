package controllers

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
)

func TestEachAlgorithmGetsAGeneratedKeyAndAJWKSThatVerifiesIt(t *testing.T) {
	for _, alg := range []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.RS256, v1alpha1.HS256} {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t)
			name := strings.ToLower(string(alg))
			p := f.policy(name, func(s *v1alpha1.TokenPolicySpec) { s.Signing.Algorithm = alg })
			f.reconcile(name)

			secret := f.secret(name + "-signing-keys")
			if got := secret.Labels[v1alpha1.LabelManagedBy]; got != v1alpha1.ManagedByValue {
				t.Errorf("secret label %s: got %q; want %q", v1alpha1.LabelManagedBy, got, v1alpha1.ManagedByValue)
			}
			if got := secret.Labels[v1alpha1.LabelComponent]; got != v1alpha1.ComponentSigningKeys {
				t.Errorf("secret label %s: got %q; want %q", v1alpha1.LabelComponent, got, v1alpha1.ComponentSigningKeys)
			}
			if !metav1.IsControlledBy(secret, p) {
				t.Errorf("secret owner references %v; want the policy as controller", secret.OwnerReferences)
			}
			set, err := keys.FromSecret(alg, secret)
			if err != nil {
				t.Fatalf("read generated secret: %v", err)
			}
			if got := len(set.IDs()); got != 1 {
				t.Fatalf("generated keys: got %d; want 1", got)
			}

			got := f.get(name)
			if got.Status.ActiveKeyID != set.Active.ID {
				t.Errorf("status.activeKeyID: got %q; want %q", got.Status.ActiveKeyID, set.Active.ID)
			}
			if len(got.Status.Keys) != 1 || got.Status.Keys[0].State != v1alpha1.KeyActive || got.Status.Keys[0].ActivatedAt == nil {
				t.Errorf("status.keys: got %+v; want one Active key with activatedAt", got.Status.Keys)
			}
			if want := "https://issuer.example.com/" + f.ns + "/" + name; got.Status.IssuerURL != want {
				t.Errorf("status.issuerURL: got %q; want %q", got.Status.IssuerURL, want)
			}
			if got.Status.ObservedGeneration != got.Generation {
				t.Errorf("status.observedGeneration: got %d; want %d", got.Status.ObservedGeneration, got.Generation)
			}
			for _, c := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionKeysReady, v1alpha1.ConditionRevocationStoreReady} {
				if cond := findCondition(got, c); cond == nil || cond.Status != metav1.ConditionTrue {
					t.Errorf("condition %s: got %+v; want True", c, cond)
				}
			}

			jwks := f.configMap(name + "-jwks")
			if got.Status.JWKSConfigMap != jwks.Name {
				t.Errorf("status.jwksConfigMap: got %q; want %q", got.Status.JWKSConfigMap, jwks.Name)
			}
			published := parseJWKS(t, jwks.Data[JWKSKey])
			if alg == v1alpha1.HS256 {
				if len(published) != 0 {
					t.Fatalf("HS256 JWKS: got %d keys; want none (its keys are secret)", len(published))
				}
				return
			}
			pub, ok := published[set.Active.ID]
			if !ok || len(published) != 1 {
				t.Fatalf("JWKS kids: got %v; want exactly %s", published, set.Active.ID)
			}
			assertVerifies(t, alg, set.Active.Signer, pub)
			for _, e := range f.drainEvents() {
				if strings.Contains(e, "KeyGenerated") {
					return
				}
			}
			t.Errorf("no KeyGenerated event")
		})
	}
}

// parseJWKS decodes a JWKS document into public keys by kid, independently of the keys package.
func parseJWKS(t *testing.T, doc string) map[string]crypto.PublicKey {
	t.Helper()
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(doc), &set); err != nil {
		t.Fatalf("JWKS is not JSON: %v", err)
	}
	out := map[string]crypto.PublicKey{}
	b64 := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("JWK member is not base64url: %v", err)
		}
		return b
	}
	for _, k := range set.Keys {
		if k["use"] != "sig" || k["kid"] == "" || k["alg"] == "" {
			t.Errorf("JWK %v: want use=sig, a kid and an alg", k)
		}
		switch k["kty"] {
		case "OKP":
			out[k["kid"]] = ed25519.PublicKey(b64(k["x"]))
		case "EC":
			out[k["kid"]] = &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(b64(k["x"])), Y: new(big.Int).SetBytes(b64(k["y"]))}
		case "RSA":
			out[k["kid"]] = &rsa.PublicKey{N: new(big.Int).SetBytes(b64(k["n"])), E: int(new(big.Int).SetBytes(b64(k["e"])).Int64())}
		default:
			t.Errorf("JWK kty %q", k["kty"])
		}
	}
	return out
}

// assertVerifies signs with priv and checks that pub verifies the signature.
func assertVerifies(t *testing.T, alg v1alpha1.SigningAlgorithm, priv crypto.Signer, pub crypto.PublicKey) {
	t.Helper()
	msg := []byte("tokenwarden")
	digest := sha256.Sum256(msg)
	var ok bool
	switch alg {
	case v1alpha1.EdDSA:
		sig, _ := priv.Sign(rand.Reader, msg, crypto.Hash(0))
		ok = ed25519.Verify(pub.(ed25519.PublicKey), msg, sig)
	case v1alpha1.ES256:
		sig, _ := priv.Sign(rand.Reader, digest[:], crypto.SHA256)
		ok = ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig)
	case v1alpha1.RS256:
		sig, _ := priv.Sign(rand.Reader, digest[:], crypto.SHA256)
		ok = rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA256, digest[:], sig) == nil
	}
	if !ok {
		t.Errorf("the published %s key does not verify a signature of the secret's key", alg)
	}
}

func kidsOf(st []v1alpha1.KeyStatus) map[string]v1alpha1.KeyState {
	out := map[string]v1alpha1.KeyState{}
	for _, k := range st {
		out[k.KeyID] = k.State
	}
	return out
}

func TestKeysRotateThroughNextActiveRetiredAndRemoved(t *testing.T) {
	f := newFixture(t)
	p := f.policy("rotating", func(s *v1alpha1.TokenPolicySpec) {
		s.AccessToken.Lifetime = metav1.Duration{Duration: 15 * time.Minute}
		s.RefreshToken.Lifetime = metav1.Duration{Duration: time.Hour}
		s.Signing.RotationInterval = &metav1.Duration{Duration: 2 * time.Hour}
	})
	_ = p
	res := f.reconcile("rotating")
	first := f.get("rotating").Status.ActiveKeyID
	if want := 2*time.Hour - 15*time.Minute; res.RequeueAfter != want {
		t.Fatalf("after the first key: requeue after %s; want %s (one access lifetime before rotation)", res.RequeueAfter, want)
	}

	// One access lifetime before rotation: a Next key is published but does not sign.
	f.clock.Step(res.RequeueAfter)
	res = f.reconcile("rotating")
	st := f.get("rotating").Status
	if st.ActiveKeyID != first || len(st.Keys) != 2 {
		t.Fatalf("at prepublish: active %s, keys %+v; want %s still active and a Next key", st.ActiveKeyID, st.Keys, first)
	}
	var next string
	for kid, state := range kidsOf(st.Keys) {
		if state == v1alpha1.KeyNext {
			next = kid
		}
	}
	if next == "" {
		t.Fatalf("at prepublish: keys %+v; want one Next", st.Keys)
	}
	if pub := parseJWKS(t, f.configMap("rotating-jwks").Data[JWKSKey]); len(pub) != 2 || pub[next] == nil {
		t.Fatalf("at prepublish: JWKS has %d keys; want the Next key %s published beside the active one", len(pub), next)
	}
	if got := f.secret("rotating-signing-keys").Annotations[v1alpha1.AnnotationActiveKey]; got != first {
		t.Fatalf("at prepublish: the secret's active key is %s; want %s until rotation", got, first)
	}
	if res.RequeueAfter != 15*time.Minute {
		t.Fatalf("at prepublish: requeue after %s; want 15m", res.RequeueAfter)
	}

	// At the rotation: Next signs, the old key retires and stays published.
	f.clock.Step(res.RequeueAfter)
	res = f.reconcile("rotating")
	st = f.get("rotating").Status
	if want := map[string]v1alpha1.KeyState{first: v1alpha1.KeyRetired, next: v1alpha1.KeyActive}; !equalStates(kidsOf(st.Keys), want) || st.ActiveKeyID != next {
		t.Fatalf("at rotation: keys %v, active %s; want %v", kidsOf(st.Keys), st.ActiveKeyID, want)
	}
	if got := f.secret("rotating-signing-keys").Annotations[v1alpha1.AnnotationActiveKey]; got != next {
		t.Fatalf("at rotation: the secret's active key is %s; want %s", got, next)
	}
	if pub := parseJWKS(t, f.configMap("rotating-jwks").Data[JWKSKey]); len(pub) != 2 {
		t.Fatalf("at rotation: JWKS has %d keys; want both (the retired key's tokens are still valid)", len(pub))
	}
	// A retired key stays until every token it signed expired: the refresh lifetime plus leeway.
	if want := time.Hour + RetirementLeeway; res.RequeueAfter != want {
		t.Fatalf("at rotation: requeue after %s; want %s", res.RequeueAfter, want)
	}
	for _, k := range st.Keys {
		if k.KeyID == first && (k.RemoveAt == nil || !k.RemoveAt.Time.Equal(f.clock.Now().Add(time.Hour+RetirementLeeway))) {
			t.Fatalf("retired key removeAt: got %v; want %v", k.RemoveAt, f.clock.Now().Add(time.Hour+RetirementLeeway))
		}
	}

	// Just before removal nothing changes; at removal the retired key leaves the Secret and the JWKS.
	f.clock.Step(res.RequeueAfter - time.Second)
	f.reconcile("rotating")
	if got := len(f.get("rotating").Status.Keys); got != 2 {
		t.Fatalf("a second before removal: %d keys; want 2", got)
	}
	f.clock.Step(time.Second)
	f.reconcile("rotating")
	st = f.get("rotating").Status
	if want := map[string]v1alpha1.KeyState{next: v1alpha1.KeyActive}; !equalStates(kidsOf(st.Keys), want) {
		t.Fatalf("after removal: keys %v; want %v", kidsOf(st.Keys), want)
	}
	if pub := parseJWKS(t, f.configMap("rotating-jwks").Data[JWKSKey]); len(pub) != 1 || pub[next] == nil {
		t.Fatalf("after removal: JWKS %v; want only %s", pub, next)
	}
	if _, ok := f.secret("rotating-signing-keys").Data[first+keys.PEMSuffix]; ok {
		t.Fatalf("after removal: the secret still holds the removed key")
	}
	var reasons []string
	for _, e := range f.drainEvents() {
		for _, r := range []string{v1alpha1.EventKeyGenerated, v1alpha1.EventKeyActivated, v1alpha1.EventKeyRemoved} {
			if strings.Contains(e, r) {
				reasons = append(reasons, r)
			}
		}
	}
	if want := "KeyGenerated KeyGenerated KeyActivated KeyRemoved"; strings.Join(reasons, " ") != want {
		t.Errorf("events: got %q; want %q", strings.Join(reasons, " "), want)
	}
}

func equalStates(a, b map[string]v1alpha1.KeyState) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestANextKeyDoesNotSignBeforeItIsPublished(t *testing.T) {
	now := epoch
	active := now.Add(-2 * time.Hour)
	schedule := []scheduledKey{
		{KeyID: "a", Created: active, Activated: &active},
		{KeyID: "b", Created: now.Add(-time.Hour)},
	}
	timing := rotationTiming{interval: 2 * time.Hour, prepublish: 15 * time.Minute, retention: time.Hour}
	plan := planRotation(schedule, now, timing, func(string) bool { return false })
	if plan.activate != "" {
		t.Fatalf("activated %s while it is missing from the JWKS; want no activation", plan.activate)
	}
	plan = planRotation(schedule, now, timing, func(kid string) bool { return kid == "b" })
	if plan.activate != "b" || plan.retire != "a" {
		t.Fatalf("once published: activate %q retire %q; want b and a", plan.activate, plan.retire)
	}
}

func TestRotationOffKeepsOneKeyForever(t *testing.T) {
	f := newFixture(t)
	f.policy("still", func(s *v1alpha1.TokenPolicySpec) { s.Signing.RotationInterval = &metav1.Duration{} })
	if res := f.reconcile("still"); res.RequeueAfter != 0 {
		t.Fatalf("requeue after %s; want none with rotation off", res.RequeueAfter)
	}
	f.clock.Step(10000 * time.Hour)
	f.reconcile("still")
	if got := len(f.get("still").Status.Keys); got != 1 {
		t.Fatalf("keys after 10000h: %d; want 1", got)
	}
}

// userSecret creates a signing-key Secret the way a user would: their keys, their labels.
func (f *fixture) userSecret(name string, labels, annotations map[string]string, data map[string][]byte) *corev1.Secret {
	f.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: labels, Annotations: annotations}, Data: data}
	if err := env.Client.Create(context.Background(), s); err != nil {
		f.t.Fatalf("create secret %s: %v", name, err)
	}
	return s
}

func encoded(t *testing.T, k *keys.Key) []byte {
	t.Helper()
	b, err := k.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAUserProvidedSecretIsUsedAsGivenAndNeverWritten(t *testing.T) {
	f := newFixture(t)
	k1, _ := keys.Generate(v1alpha1.ES256)
	k2, _ := keys.Generate(v1alpha1.ES256)
	created := f.userSecret("my-keys", nil,
		map[string]string{v1alpha1.AnnotationActiveKey: k2.ID, v1alpha1.AnnotationAllowedPolicies: "other, provided"},
		map[string][]byte{k1.ID + ".pem": encoded(t, k1), k2.ID + ".pem": encoded(t, k2), "README": []byte("ours")})
	f.policy("provided", func(s *v1alpha1.TokenPolicySpec) {
		s.Signing.Algorithm = v1alpha1.ES256
		s.Signing.SecretName = "my-keys"
		s.Signing.RotationInterval = &metav1.Duration{Duration: time.Hour}
	})
	f.reconcile("provided")
	f.clock.Step(100 * time.Hour) // long past any rotation
	f.reconcile("provided")

	st := f.get("provided").Status
	if st.ActiveKeyID != k2.ID {
		t.Errorf("active key: got %s; want the annotated %s", st.ActiveKeyID, k2.ID)
	}
	if want := map[string]v1alpha1.KeyState{k1.ID: v1alpha1.KeyRetired, k2.ID: v1alpha1.KeyActive}; !equalStates(kidsOf(st.Keys), want) {
		t.Errorf("keys: got %v; want %v", kidsOf(st.Keys), want)
	}
	if c := findCondition(f.get("provided"), v1alpha1.ConditionKeysReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("KeysReady: got %+v; want True", c)
	}
	if got := f.secret("my-keys"); got.ResourceVersion != created.ResourceVersion {
		t.Errorf("the user's secret was written (resourceVersion %s -> %s); want it untouched", created.ResourceVersion, got.ResourceVersion)
	}
	pub := parseJWKS(t, f.configMap("provided-jwks").Data[JWKSKey])
	if len(pub) != 2 {
		t.Fatalf("JWKS: %d keys; want both of the user's", len(pub))
	}
	assertVerifies(t, v1alpha1.ES256, k1.Signer, pub[k1.ID])
	// The issuer gets the keys, and only the keys.
	copied := f.issuerSecret(f.get("provided").IssuerKeysSecretName())
	set, err := keys.FromSecret(v1alpha1.ES256, copied)
	if err != nil || set.Active.ID != k2.ID || len(set.IDs()) != 2 || len(copied.Data) != 2 {
		t.Fatalf("materialised keys: %v, %v, entries %d; want both keys, %s signing, nothing else", set, err, len(copied.Data), k2.ID)
	}
}

func TestAnUnusableKeySecretSetsKeysReadyFalseWithAWarning(t *testing.T) {
	ed, _ := keys.Generate(v1alpha1.EdDSA)
	allowed := map[string]string{v1alpha1.AnnotationAllowedPolicies: "broken"}
	tests := map[string]struct {
		annotations map[string]string
		data        map[string][]byte
		want        string
	}{
		"a PEM entry that is not PEM": {
			annotations: allowed, data: map[string][]byte{"k1.pem": []byte("not a key")},
			want: "no PEM block",
		},
		"a key of another algorithm": {
			annotations: allowed, data: map[string][]byte{ed.ID + ".pem": encoded(t, ed)},
			want: "cannot sign ES256",
		},
		"no keys at all": {
			annotations: allowed, data: map[string][]byte{"tls.crt": []byte("x")},
			want: "no <kid>.pem or <kid>.key entries",
		},
		"two keys and no active-key annotation": {
			annotations: allowed, data: map[string][]byte{"a.pem": mustES256(t), "b.pem": mustES256(t)},
			want: "no tokenwarden.io/active-key annotation",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			created := f.userSecret("keys", nil, tc.annotations, tc.data)
			f.policy("broken", func(s *v1alpha1.TokenPolicySpec) {
				s.Signing.Algorithm = v1alpha1.ES256
				s.Signing.SecretName = "keys"
			})
			_, err := f.r.Reconcile(context.Background(), reconcileRequest(f.ns, "broken"))
			if !errors.Is(err, reconcile.TerminalError(nil)) {
				t.Errorf("reconcile error: got %v; want a terminal error (retrying cannot fix the Secret)", err)
			}
			p := f.get("broken")
			c := findCondition(p, v1alpha1.ConditionKeysReady)
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonSecretMalformed || !strings.Contains(c.Message, tc.want) {
				t.Errorf("KeysReady: got %+v; want False, %s, mentioning %q", c, v1alpha1.ReasonSecretMalformed, tc.want)
			}
			if r := findCondition(p, v1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionFalse {
				t.Errorf("Ready: got %+v; want False", r)
			}
			if p.Status.ObservedGeneration == p.Generation {
				t.Errorf("observedGeneration moved to %d on a failed pass", p.Status.ObservedGeneration)
			}
			warned := false
			for _, e := range f.drainEvents() {
				warned = warned || (strings.HasPrefix(e, "Warning") && strings.Contains(e, v1alpha1.EventInvalidSigningSecret))
			}
			if !warned {
				t.Errorf("no Warning %s event", v1alpha1.EventInvalidSigningSecret)
			}
			if got := f.secret("keys"); got.ResourceVersion != created.ResourceVersion {
				t.Errorf("the user's secret was written; want it untouched")
			}
			f.noIssuerSecret(p.IssuerKeysSecretName())
		})
	}
}

func mustES256(t *testing.T) []byte {
	k, err := keys.Generate(v1alpha1.ES256)
	if err != nil {
		t.Fatal(err)
	}
	return encoded(t, k)
}

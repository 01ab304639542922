package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
)

// RetirementLeeway is added to the time a retired key stays published, for clock skew between the
// controller, the issuer replicas and resource servers.
const RetirementLeeway = time.Minute

// JWKSCacheWindow is the least time a Next key is published before it signs, whatever the access token
// lifetime: the issuer serves jwks.json with max-age=60, so a resource server that caches it strictly
// has refetched it within two minutes.
const JWKSCacheWindow = 2 * time.Minute

// scheduledKey is one key's place in the rotation of a generated Secret, kept in its key-schedule
// annotation: times only, never key material.
type scheduledKey struct {
	KeyID     string     `json:"kid"`
	Created   time.Time  `json:"created"`
	Activated *time.Time `json:"activated,omitempty"`
	Retired   *time.Time `json:"retired,omitempty"`
}

func (k scheduledKey) state() v1alpha1.KeyState {
	switch {
	case k.Retired != nil:
		return v1alpha1.KeyRetired
	case k.Activated != nil:
		return v1alpha1.KeyActive
	}
	return v1alpha1.KeyNext
}

// rotationTiming is what decides a generated key set's rotation.
type rotationTiming struct {
	interval   time.Duration // 0: never rotate
	prepublish time.Duration // how long a Next key is published before it signs: an access lifetime, 2 minutes at least
	retention  time.Duration // how long a Retired key stays published: until every token it signed expired
}

func timingFor(p *v1alpha1.TokenPolicy) rotationTiming {
	access, refresh := p.Spec.AccessToken.Lifetime.Duration, p.Spec.RefreshToken.Lifetime.Duration
	return rotationTiming{
		interval:   p.Spec.Signing.Rotation(),
		prepublish: max(access, JWKSCacheWindow),
		retention:  max(access, refresh) + RetirementLeeway,
	}
}

// rotationPlan is what one pass does to a generated key set.
type rotationPlan struct {
	schedule []scheduledKey // the schedule after this pass
	generate bool           // add a Next key
	activate string         // the Next key that starts signing now
	retire   string         // the Active key that stops signing now
	remove   []string       // Retired keys whose tokens have all expired
	deadline time.Time      // when the next step is due; zero if none
}

// planRotation decides the next rotation step at now. published says whether a kid is in the JWKS
// ConfigMap: a Next key starts signing only once it has been published for prepublish.
func planRotation(schedule []scheduledKey, now time.Time, t rotationTiming, published func(kid string) bool) rotationPlan {
	plan := rotationPlan{}
	var active, next *scheduledKey
	for i := range schedule {
		k := schedule[i]
		if k.state() == v1alpha1.KeyRetired && !now.Before(k.Retired.Add(t.retention)) {
			plan.remove = append(plan.remove, k.KeyID)
			continue
		}
		plan.schedule = append(plan.schedule, k)
	}
	for i := range plan.schedule {
		switch plan.schedule[i].state() {
		case v1alpha1.KeyActive:
			active = &plan.schedule[i]
		case v1alpha1.KeyNext:
			next = &plan.schedule[i]
		case v1alpha1.KeyRetired:
			plan.due(plan.schedule[i].Retired.Add(t.retention))
		}
	}
	if active == nil || t.interval == 0 {
		return plan
	}
	rotateAt := active.Activated.Add(t.interval)
	switch {
	case next == nil && !now.Before(rotateAt.Add(-t.prepublish)):
		plan.generate = true
		plan.due(now.Add(t.prepublish))
	case next == nil:
		plan.due(rotateAt.Add(-t.prepublish))
	case !now.Before(rotateAt) && !now.Before(next.Created.Add(t.prepublish)) && published(next.KeyID):
		at := now
		next.Activated, active.Retired = &at, &at
		plan.activate, plan.retire = next.KeyID, active.KeyID
		plan.due(now.Add(t.retention))
		plan.due(now.Add(t.interval - t.prepublish))
	default:
		plan.due(maxTime(rotateAt, next.Created.Add(t.prepublish)))
	}
	return plan
}

func (p *rotationPlan) due(t time.Time) {
	if p.deadline.IsZero() || t.Before(p.deadline) {
		p.deadline = t
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// reconcileKeys loads, generates or rotates the policy's signing keys. A policy signs only with a Secret of
// its own: one the controller generated for it (controlled by the policy, with its UID), which the
// controller rotates, or one someone brought that lists the policy in its tokenwarden.io/allowed-policies
// annotation, which is used as given and never written. Any other Secret is refused: another policy's keys
// must not sign this policy's tokens, nor rotate on its schedule.
func (r *TokenPolicyReconciler) reconcileKeys(ctx context.Context, s *scope) error {
	p := s.policy
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.SigningSecretName()}
	secret, err := r.secrets.get(ctx, key)
	switch {
	case isNotFound(err):
		return r.createKeySecret(ctx, s, key)
	case err != nil:
		return wrapf(err, "get signing-key secret %s", key)
	case metav1.IsControlledBy(secret, p):
		return r.rotateKeySecret(ctx, s, secret)
	case !v1alpha1.AllowsPolicy(secret.Annotations[v1alpha1.AnnotationAllowedPolicies], p.Name):
		return r.keysNotPermitted(s, secret)
	}
	return r.useProvidedSecret(s, secret)
}

// keysNotPermitted refuses a Secret that is not the policy's to use.
func (r *TokenPolicyReconciler) keysNotPermitted(s *scope, secret *corev1.Secret) error {
	p := s.policy
	var err error
	if owner := metav1.GetControllerOf(secret); owner != nil {
		err = fmt.Errorf("secret %s was generated for %s %s (uid %s), not for this policy: only that policy signs with it and rotates it; "+
			"name another Secret in spec.signing.secretName, or none to have one generated for this policy, "+
			"or add the annotation %s: %s to the Secret to share its keys as they are",
			secret.Name, owner.Kind, owner.Name, owner.UID, v1alpha1.AnnotationAllowedPolicies, p.Name)
	} else {
		err = fmt.Errorf("secret %s does not allow this policy: add the annotation %s: %s to it (a comma-separated list of the TokenPolicies that may sign with its keys)",
			secret.Name, v1alpha1.AnnotationAllowedPolicies, p.Name)
	}
	s.keysErr = &problem{reason: v1alpha1.ReasonSecretNotPermitted, err: err}
	r.event(p, corev1.EventTypeWarning, v1alpha1.EventSecretNotPermitted, "LoadKeys", "%v", err)
	return nil
}

func (r *TokenPolicyReconciler) createKeySecret(ctx context.Context, s *scope, key types.NamespacedName) error {
	p := s.policy
	k, err := keys.Generate(p.Spec.Signing.Algorithm)
	if err != nil {
		return err
	}
	now := s.now
	schedule := []scheduledKey{{KeyID: k.ID, Created: now, Activated: &now}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
		Labels: ownedLabels(p, v1alpha1.ComponentSigningKeys)}, Type: corev1.SecretTypeOpaque}
	if err := writeKeys(secret, k.ID, schedule, []*keys.Key{k}); err != nil {
		return err
	}
	if err := controllerutil.SetControllerReference(p, secret, r.Scheme); err != nil {
		return err
	}
	if err := r.Client.Create(ctx, secret); err != nil {
		return wrapf(err, "create signing-key secret %s", key)
	}
	r.secrets.keep(secret)
	r.event(p, corev1.EventTypeNormal, v1alpha1.EventKeyGenerated, "Generate", "Generated %s signing key %s in Secret %s", p.Spec.Signing.Algorithm, k.ID, key.Name)
	if plan := planRotation(schedule, now, timingFor(p), func(string) bool { return false }); !plan.deadline.IsZero() {
		s.requeueAt(plan.deadline)
	}
	return r.loadKeys(s, secret, schedule)
}

// rotateKeySecret advances the rotation of a Secret the controller generated.
func (r *TokenPolicyReconciler) rotateKeySecret(ctx context.Context, s *scope, secret *corev1.Secret) error {
	p := s.policy
	set, err := keys.FromSecret(p.Spec.Signing.Algorithm, secret)
	if err != nil {
		return r.keysInvalid(s, err)
	}
	var schedule []scheduledKey
	if err := json.Unmarshal([]byte(secret.Annotations[v1alpha1.AnnotationKeySchedule]), &schedule); err != nil {
		return r.keysInvalid(s, fmt.Errorf("secret %s: annotation %s: %w", secret.Name, v1alpha1.AnnotationKeySchedule, err))
	}
	published, err := r.publishedKeyIDs(ctx, s)
	if err != nil {
		return err
	}
	plan := planRotation(schedule, s.now, timingFor(p), func(kid string) bool { return published[kid] })
	if !plan.deadline.IsZero() {
		s.requeueAt(plan.deadline)
	}
	if !plan.generate && plan.activate == "" && len(plan.remove) == 0 {
		return r.loadKeys(s, secret, schedule)
	}

	list := make([]*keys.Key, 0, len(plan.schedule)+1)
	for _, sk := range plan.schedule {
		k, ok := set.Get(sk.KeyID)
		if !ok {
			return r.keysInvalid(s, fmt.Errorf("secret %s: scheduled key %s is missing", secret.Name, sk.KeyID))
		}
		list = append(list, k)
	}
	if plan.generate {
		k, err := keys.Generate(p.Spec.Signing.Algorithm)
		if err != nil {
			return err
		}
		plan.schedule = append(plan.schedule, scheduledKey{KeyID: k.ID, Created: s.now})
		list = append(list, k)
	}
	activeID := set.Active.ID
	if plan.activate != "" {
		activeID = plan.activate
	}
	updated := secret.DeepCopy()
	if err := writeKeys(updated, activeID, plan.schedule, list); err != nil {
		return err
	}
	if err := r.Client.Patch(ctx, updated, client.MergeFromWithOptions(secret, client.MergeFromWithOptimisticLock{})); err != nil {
		return wrapf(err, "rotate keys in secret %s", secret.Name)
	}
	r.secrets.keep(updated)
	if plan.generate {
		k := list[len(list)-1]
		r.event(p, corev1.EventTypeNormal, v1alpha1.EventKeyGenerated, "Rotate", "Generated next signing key %s; it signs from %s", k.ID, s.now.Add(timingFor(p).prepublish).UTC().Format(time.RFC3339))
	}
	if plan.activate != "" {
		r.event(p, corev1.EventTypeNormal, v1alpha1.EventKeyActivated, "Rotate", "Signing key %s is active; key %s is retired", plan.activate, plan.retire)
	}
	for _, kid := range plan.remove {
		r.event(p, corev1.EventTypeNormal, v1alpha1.EventKeyRemoved, "Rotate", "Removed retired signing key %s: every token it signed has expired", kid)
	}
	return r.loadKeys(s, updated, plan.schedule)
}

// writeKeys replaces the keys of secret with list, active signing, and records the schedule.
func writeKeys(secret *corev1.Secret, active string, schedule []scheduledKey, list []*keys.Key) error {
	sched, err := json.Marshal(schedule)
	if err != nil {
		return err
	}
	secret.Data = make(map[string][]byte, len(list))
	for _, k := range list {
		b, err := k.Encode()
		if err != nil {
			return err
		}
		secret.Data[k.DataKey()] = b
	}
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	secret.Annotations[v1alpha1.AnnotationActiveKey] = active
	secret.Annotations[v1alpha1.AnnotationKeySchedule] = string(sched)
	return nil
}

// useProvidedSecret loads the keys of a Secret someone else manages: every key verifies, the annotated one
// signs, nothing rotates, nothing is written.
func (r *TokenPolicyReconciler) useProvidedSecret(s *scope, secret *corev1.Secret) error {
	set, err := keys.FromSecret(s.policy.Spec.Signing.Algorithm, secret)
	if err != nil {
		return r.keysInvalid(s, err)
	}
	s.keySet, s.keySource = set, sourceOf(secret)
	for _, kid := range set.IDs() {
		state := v1alpha1.KeyRetired
		if kid == set.Active.ID {
			state = v1alpha1.KeyActive
		}
		s.keyStatus = append(s.keyStatus, v1alpha1.KeyStatus{KeyID: kid, State: state})
	}
	return nil
}

func (r *TokenPolicyReconciler) loadKeys(s *scope, secret *corev1.Secret, schedule []scheduledKey) error {
	set, err := keys.FromSecret(s.policy.Spec.Signing.Algorithm, secret)
	if err != nil {
		return r.keysInvalid(s, err)
	}
	s.keySet, s.keySource = set, sourceOf(secret)
	retention := timingFor(s.policy).retention
	sort.SliceStable(schedule, func(i, j int) bool { return schedule[i].Created.Before(schedule[j].Created) })
	for _, sk := range schedule {
		st := v1alpha1.KeyStatus{KeyID: sk.KeyID, State: sk.state(), CreatedAt: metaTime(&sk.Created),
			ActivatedAt: metaTime(sk.Activated), RetiredAt: metaTime(sk.Retired)}
		if sk.Retired != nil {
			st.RemoveAt = metaTime(new(sk.Retired.Add(retention)))
		}
		s.keyStatus = append(s.keyStatus, st)
	}
	return nil
}

// keysInvalid records that the key Secret cannot be used: a False condition and a Warning event, and no
// error for this step, so that the pass still reports status and the shards.
func (r *TokenPolicyReconciler) keysInvalid(s *scope, err error) error {
	s.keysErr = &problem{reason: v1alpha1.ReasonSecretMalformed, err: err}
	r.event(s.policy, corev1.EventTypeWarning, v1alpha1.EventInvalidSigningSecret, "LoadKeys", "%v", err)
	return nil
}

// materialiseKeys copies the keys the pass loaded into the issuer's namespace, in the Secret format the
// issuer reads (and nothing else of the Secret they came from), or deletes the copy when there are none:
// the issuer serves a policy only with keys the controller validated and permitted.
func (r *TokenPolicyReconciler) materialiseKeys(ctx context.Context, s *scope) error {
	name := s.policy.IssuerKeysSecretName()
	if s.keySet == nil {
		return r.unmaterialise(ctx, name)
	}
	data, active, err := s.keySet.Data()
	if err != nil {
		return err
	}
	return r.materialise(ctx, s.policy, name, v1alpha1.ComponentSigningKeys, data, map[string]string{
		v1alpha1.AnnotationActiveKey: active,
		v1alpha1.AnnotationSource:    s.keySource,
	})
}

func metaTime(t *time.Time) *metav1.Time {
	if t == nil {
		return nil
	}
	mt := metav1.NewTime(t.UTC())
	return &mt
}

func (r *TokenPolicyReconciler) event(p *v1alpha1.TokenPolicy, eventType, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(p, nil, eventType, reason, action, note, args...)
	}
}

// sourceOf is the value of AnnotationSource for a copy made from secret.
func sourceOf(secret *corev1.Secret) string { return secret.Name + "@" + secret.ResourceVersion }

package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SigningAlgorithm is the JWS algorithm a policy signs its tokens with.
// +kubebuilder:validation:Enum=EdDSA;ES256;RS256;HS256
type SigningAlgorithm string

const (
	// EdDSA signs with Ed25519 (RFC 8037). The default: small, fast, deterministic signatures.
	EdDSA SigningAlgorithm = "EdDSA"
	// ES256 signs with ECDSA on P-256 and SHA-256.
	ES256 SigningAlgorithm = "ES256"
	// RS256 signs with RSASSA-PKCS1-v1_5 (2048-bit keys) and SHA-256.
	RS256 SigningAlgorithm = "RS256"
	// HS256 signs with HMAC-SHA256. Its keys are secret, so the JWKS publishes none and resource servers
	// verify through introspection.
	HS256 SigningAlgorithm = "HS256"
)

// Rotation is the rotation interval; 0 when rotation is off.
func (s SigningSpec) Rotation() time.Duration {
	if s.RotationInterval == nil {
		return 0
	}
	return s.RotationInterval.Duration
}

// Symmetric reports whether keys of the algorithm are shared secrets rather than key pairs.
func (a SigningAlgorithm) Symmetric() bool { return a == HS256 }

// TokenPolicySpec is what a platform team declares: token lifetimes, how tokens are signed, who may log
// in and introspect, and how revocation state is sharded.
// +kubebuilder:validation:XValidation:rule="duration(self.refreshToken.lifetime) > duration(self.accessToken.lifetime)",message="must be longer than accessToken.lifetime",fieldPath=".refreshToken.lifetime",reason="FieldValueInvalid"
// +kubebuilder:validation:XValidation:rule="!has(self.refreshToken.idleTimeout) || (duration(self.refreshToken.idleTimeout) > duration(self.accessToken.lifetime) && duration(self.refreshToken.idleTimeout) <= duration(self.refreshToken.lifetime))",message="must be longer than accessToken.lifetime and at most refreshToken.lifetime",fieldPath=".refreshToken.idleTimeout",reason="FieldValueInvalid"
// +kubebuilder:validation:XValidation:rule="duration(self.signing.rotationInterval) == duration('0s') || duration(self.signing.rotationInterval).getSeconds() > duration(self.accessToken.lifetime).getSeconds() * 2",message="must be 0s (no rotation) or longer than twice accessToken.lifetime",fieldPath=".signing.rotationInterval",reason="FieldValueInvalid"
type TokenPolicySpec struct {
	// Audiences are the aud claim of every access token: the resource servers that accept them.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	Audiences []string `json:"audiences"`

	// AccessToken configures the short-lived JWTs that resource servers verify.
	// +kubebuilder:default={}
	// +optional
	AccessToken AccessTokenSpec `json:"accessToken,omitzero"`

	// RefreshToken configures sessions: how long a login lasts and how refresh tokens rotate.
	// +kubebuilder:default={}
	// +optional
	RefreshToken RefreshTokenSpec `json:"refreshToken,omitzero"`

	// Signing configures the signing keys and their rotation.
	// +kubebuilder:default={}
	// +optional
	Signing SigningSpec `json:"signing,omitzero"`

	// Login says who may obtain tokens under this policy.
	// +optional
	Login LoginSpec `json:"login,omitzero"`

	// Introspection says who may call the RFC 7662 introspection endpoint.
	// +optional
	Introspection IntrospectionSpec `json:"introspection,omitzero"`

	// Revocation configures the ConfigMap shards that hold session and revocation records.
	// +kubebuilder:default={}
	// +optional
	Revocation RevocationSpec `json:"revocation,omitzero"`

	// Browser turns on the browser mode of the JSON API: the refresh token in an HttpOnly cookie, CORS
	// for the allowed origins, and CSRF checks. Unset: the JSON API returns the refresh token in the
	// body and serves no other origin.
	// +optional
	Browser *BrowserSpec `json:"browser,omitempty"`
}

// AccessTokenSpec configures access tokens.
type AccessTokenSpec struct {
	// Lifetime of an access token, from 30s to 24h.
	// +kubebuilder:default="15m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s') && duration(self) <= duration('24h')",message="must be between 30s and 24h",reason="FieldValueInvalid"
	// +optional
	Lifetime metav1.Duration `json:"lifetime,omitzero"`
}

// RefreshTokenSpec configures sessions and their refresh tokens.
type RefreshTokenSpec struct {
	// Lifetime is the absolute length of a session, counted from login; it must exceed the access token
	// lifetime. Refreshing never extends it.
	// +kubebuilder:default="168h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('8760h')",message="must be at most 8760h (one year)",reason="FieldValueInvalid"
	// +optional
	Lifetime metav1.Duration `json:"lifetime,omitzero"`

	// IdleTimeout ends a session that has not been refreshed for this long. Unset: no idle timeout.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +optional
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitzero"`

	// ReuseGracePeriod is how long after a refresh the same refresh token may be presented again and get
	// the same successor (for clients that retry a lost response). 0s to 60s; 0s means any reuse revokes
	// the session.
	// +kubebuilder:default="0s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('60s')",message="must be between 0s and 60s",reason="FieldValueInvalid"
	// +optional
	ReuseGracePeriod metav1.Duration `json:"reuseGracePeriod,omitzero"`
}

// SigningSpec configures the signing keys.
type SigningSpec struct {
	// Algorithm signs every token of the policy. It cannot be changed once set.
	// +kubebuilder:default=EdDSA
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="cannot be changed; create a new TokenPolicy",reason="FieldValueForbidden"
	// +optional
	Algorithm SigningAlgorithm `json:"algorithm,omitempty"`

	// SecretName is the Secret that holds the signing keys; default <policy>-signing-keys. When it does not
	// exist the controller generates it for this policy (and only this policy) and rotates its keys. A Secret
	// created by someone else is used only if its tokenwarden.io/allowed-policies annotation lists this
	// policy, as given and never written: every <kid>.pem (or <kid>.key for HS256) entry is a key, and the
	// one named by the tokenwarden.io/active-key annotation (or the only one) signs.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// RotationInterval is how long a generated key signs before the next one takes over; 0s disables
	// rotation. Otherwise it must exceed twice the access token lifetime.
	// +kubebuilder:default="720h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="must not be negative",reason="FieldValueInvalid"
	// +optional
	RotationInterval *metav1.Duration `json:"rotationInterval,omitempty"`
}

// ServiceAccountRef names a ServiceAccount, or every ServiceAccount of a namespace with name "*".
type ServiceAccountRef struct {
	// Namespace of the ServiceAccount.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`

	// Name of the ServiceAccount, or "*" for all of the namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$`
	Name string `json:"name"`
}

// Matches reports whether the ServiceAccount namespace/name is the one referred to.
func (r ServiceAccountRef) Matches(namespace, name string) bool {
	return r.Namespace == namespace && (r.Name == "*" || r.Name == name)
}

// LoginSpec says who may obtain tokens.
type LoginSpec struct {
	// PasswordSecretName names a Secret in the policy's namespace whose keys are usernames and whose
	// values are bcrypt hashes (cost 10 to 14); unset, password login is off. The Secret's
	// tokenwarden.io/allowed-policies annotation must list this policy.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +optional
	PasswordSecretName string `json:"passwordSecretName,omitempty"`

	// ServiceAccounts may exchange their ServiceAccount token for tokens of this policy (RFC 8693).
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	ServiceAccounts []ServiceAccountRef `json:"serviceAccounts,omitempty"`
}

// IntrospectionSpec says who may introspect tokens.
type IntrospectionSpec struct {
	// ServiceAccounts may call the introspection endpoint with their ServiceAccount token as bearer.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	ServiceAccounts []ServiceAccountRef `json:"serviceAccounts,omitempty"`
}

// RevocationSpec configures the revocation store.
type RevocationSpec struct {
	// Shards is the number of shards (each a base and a journal ConfigMap) that session and revocation
	// records are spread over. Raise it when a shard's fill approaches its budget: a session stays in the
	// shard it was placed in at login, and new sessions go to shards with room. A shard beyond the count
	// is deleted once its sessions have ended.
	// +kubebuilder:default=4
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=256
	// +optional
	Shards int32 `json:"shards,omitempty"`
}

// KeyState is where a signing key stands in its rotation.
// +kubebuilder:validation:Enum=Next;Active;Retired
type KeyState string

const (
	// KeyNext is published in the JWKS but does not sign yet.
	KeyNext KeyState = "Next"
	// KeyActive signs new tokens.
	KeyActive KeyState = "Active"
	// KeyRetired no longer signs and stays published until every token it signed has expired.
	KeyRetired KeyState = "Retired"
)

// KeyStatus describes one signing key.
type KeyStatus struct {
	// KeyID is the key's kid.
	KeyID string `json:"kid"`
	// State is Next, Active or Retired.
	State KeyState `json:"state"`
	// CreatedAt is when the key was generated or first seen.
	// +optional
	CreatedAt *metav1.Time `json:"createdAt,omitempty"`
	// ActivatedAt is when the key started signing.
	// +optional
	ActivatedAt *metav1.Time `json:"activatedAt,omitempty"`
	// RetiredAt is when the key stopped signing.
	// +optional
	RetiredAt *metav1.Time `json:"retiredAt,omitempty"`
	// RemoveAt is when a retired key leaves the JWKS: once every token it signed has expired.
	// +optional
	RemoveAt *metav1.Time `json:"removeAt,omitempty"`
}

// ShardStatus describes one revocation shard.
type ShardStatus struct {
	// Name of the shard's ConfigMap.
	Name string `json:"name"`
	// Records is the number of session and subject records in the shard.
	Records int32 `json:"records"`
	// Bytes is the size of the shard's data against its budget.
	Bytes int64 `json:"bytes"`
	// RevokedSessions is the number of revoked sessions recorded in the shard.
	RevokedSessions int32 `json:"revokedSessions"`
}

// TokenPolicyStatus is what the controller observed and did.
type TokenPolicyStatus struct {
	// ObservedGeneration is the generation the status describes, set after a successful pass.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready summarises KeysReady and RevocationStoreReady.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// IssuerURL is the iss claim of the policy's tokens and the base of its endpoints.
	// +optional
	IssuerURL string `json:"issuerURL,omitempty"`

	// IssuerNamespace is the issuer's namespace, where the controller materialises what the issuer needs to
	// serve the policy: its signing keys, its login material and its revocation objects, each named
	// <objectPrefix>-<what>.
	// +optional
	IssuerNamespace string `json:"issuerNamespace,omitempty"`

	// ObjectPrefix is the prefix of the names of those objects, and the value of their
	// tokenwarden.io/object-prefix label.
	// +optional
	ObjectPrefix string `json:"objectPrefix,omitempty"`

	// ActiveKeyID is the kid that signs new tokens.
	// +optional
	ActiveKeyID string `json:"activeKeyID,omitempty"`

	// Keys lists every key in the JWKS, with its rotation state and times.
	// +listType=atomic
	// +optional
	Keys []KeyStatus `json:"keys,omitempty"`

	// JWKSConfigMap names the ConfigMap (key jwks.json) that holds the public keys, for resource servers
	// that verify offline.
	// +optional
	JWKSConfigMap string `json:"jwksConfigMap,omitempty"`

	// Shards reports each revocation shard's fill.
	// +listType=atomic
	// +optional
	Shards []ShardStatus `json:"shards,omitempty"`

	// RevokedSessions is the number of revoked sessions across all shards.
	// +optional
	RevokedSessions *int32 `json:"revokedSessions,omitempty"`
}

// TokenPolicy declares how one group of apps gets tokens: lifetimes, signing, who may log in, and where
// revocation state lives. The issuer serves it at <issuer URL>/<namespace>/<name>.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tp;tpol,categories=tokenwarden
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="a TokenPolicy name is at most 63 characters: it is a label value on the objects made for the policy",reason="FieldValueInvalid"
// +kubebuilder:printcolumn:name="Algorithm",type=string,JSONPath=`.spec.signing.algorithm`
// +kubebuilder:printcolumn:name="Access",type=string,JSONPath=`.spec.accessToken.lifetime`
// +kubebuilder:printcolumn:name="Refresh",type=string,JSONPath=`.spec.refreshToken.lifetime`
// +kubebuilder:printcolumn:name="Active Key",type=string,JSONPath=`.status.activeKeyID`
// +kubebuilder:printcolumn:name="Revoked",type=integer,JSONPath=`.status.revokedSessions`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TokenPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TokenPolicySpec   `json:"spec"`
	Status TokenPolicyStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// TokenPolicyList is a list of TokenPolicy.
type TokenPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TokenPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&TokenPolicy{}, &TokenPolicyList{})
}

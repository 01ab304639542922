package v1alpha1

// Condition types of a TokenPolicy.
const (
	// ConditionReady summarises the policy: True when the issuer has everything it needs to serve it (keys,
	// login material, revocation objects), so that it serves the policy within seconds.
	ConditionReady = "Ready"
	// ConditionKeysReady is True when the signing-key Secret is the policy's to use, an active key is loaded
	// and published, and the keys are materialised for the issuer.
	ConditionKeysReady = "KeysReady"
	// ConditionLoginReady is True when password login is off, or its users Secret is the policy's to use,
	// every entry is a bcrypt hash of an accepted cost, and the hashes are materialised for the issuer.
	ConditionLoginReady = "LoginReady"
	// ConditionRevocationStoreReady is True when every shard exists and has room under its budget.
	ConditionRevocationStoreReady = "RevocationStoreReady"
)

// ConditionApplied is True once a TokenRevocation is durably recorded.
const ConditionApplied = "Applied"

// Condition reasons.
const (
	ReasonReady                 = "Ready"
	ReasonKeysAvailable         = "KeysAvailable"
	ReasonSecretMalformed       = "SecretMalformed"
	ReasonSecretNotFound        = "SecretNotFound"
	ReasonSecretNotPermitted    = "SecretNotPermitted"
	ReasonLoginAvailable        = "LoginAvailable"
	ReasonPasswordLoginOff      = "PasswordLoginOff"
	ReasonLoginNotReady         = "LoginNotReady"
	ReasonKeysNotReady          = "KeysNotReady"
	ReasonShardsAvailable       = "ShardsAvailable"
	ReasonShardNearBudget       = "ShardNearBudget"
	ReasonRevocationStoreFailed = "RevocationStoreNotReady"
	ReasonReconcileError        = "ReconcileError"
	ReasonApplied               = "Applied"
	ReasonPolicyNotFound        = "PolicyNotFound"
	ReasonInvalidSessionID      = "InvalidSessionID"
)

// Event reasons, on the TokenPolicy the event is about.
const (
	EventKeyGenerated         = "KeyGenerated"
	EventKeyActivated         = "KeyActivated"
	EventKeyRetired           = "KeyRetired"
	EventKeyRemoved           = "KeyRemoved"
	EventInvalidSigningSecret = "InvalidSigningSecret"
	EventInvalidUsersSecret   = "InvalidUsersSecret"
	EventSecretNotPermitted   = "SecretNotPermitted"
	EventShardNearBudget      = "ShardNearBudget"
	EventRefreshTokenReuse    = "RefreshTokenReuse"
	EventRevocationApplied    = "RevocationApplied"
	EventRevocationsMoved     = "RevocationsMoved"
)

// Labels and annotations tokenwarden puts on the objects it owns or reads.
const (
	// LabelPolicy names the TokenPolicy an object belongs to.
	LabelPolicy = "tokenwarden.io/policy"
	// LabelPolicyNamespace names the namespace of that TokenPolicy, on the objects materialised for it in the
	// issuer's namespace.
	LabelPolicyNamespace = "tokenwarden.io/policy-namespace"
	// LabelObjectPrefix holds TokenPolicy.ObjectPrefix on every object materialised for the policy in the
	// issuer's namespace: the selector of all of them.
	LabelObjectPrefix = "tokenwarden.io/object-prefix"
	// LabelComponent says what the object is for: one of the Component* values.
	LabelComponent = "tokenwarden.io/component"
	// LabelManagedBy marks an object tokenwarden created and may rewrite.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is LabelManagedBy's value.
	ManagedByValue = "tokenwarden"

	// LabelRevocationRole marks a sealed segment among a policy's revocation objects, so that the merge
	// can list the segments without the bases.
	LabelRevocationRole = "tokenwarden.io/revocation-role"
	// RevocationRoleSegment is LabelRevocationRole's value on a sealed segment.
	RevocationRoleSegment = "segment"

	ComponentSigningKeys = "signing-keys"
	ComponentJWKS        = "jwks"
	ComponentRevocations = "revocations"
	ComponentUsers       = "users"
	ComponentSubjects    = "subjects"

	// AnnotationActiveKey names the kid that signs, in a signing-key Secret.
	AnnotationActiveKey = "tokenwarden.io/active-key"
	// AnnotationSurplusSince marks, on a revocation shard beyond the shard count, when it became surplus:
	// it is deleted once empty and one refresh lifetime later.
	AnnotationSurplusSince = "tokenwarden.io/surplus-since"
	// AnnotationKeySchedule holds, in a generated signing-key Secret, the rotation times of its keys.
	AnnotationKeySchedule = "tokenwarden.io/key-schedule"
	// AnnotationAllowedPolicies, on a Secret someone brings (signing keys, users), lists the TokenPolicies of
	// its namespace that may use it, comma-separated. A policy uses a Secret only if the Secret was generated
	// for it or lists it here.
	AnnotationAllowedPolicies = "tokenwarden.io/allowed-policies"
	// AnnotationLongestRefreshLifetime, on a policy's revocation journal, is the longest refresh lifetime
	// its sessions that may still live were issued with, and until when (configmap.LongestLifetime).
	AnnotationLongestRefreshLifetime = "tokenwarden.io/longest-refresh-lifetime"
	// AnnotationSource, on a materialised Secret, names the Secret it was made from and that Secret's
	// resourceVersion: <name>@<resourceVersion>.
	AnnotationSource = "tokenwarden.io/source"

	// FinalizerMaterialised is on every TokenPolicy whose objects the controller materialised in the issuer's
	// namespace, where owner references cannot reach: it removes them before the policy goes.
	FinalizerMaterialised = "tokenwarden.io/materialised"
)

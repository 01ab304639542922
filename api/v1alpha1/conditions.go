package v1alpha1

// Condition types of a TokenPolicy.
const (
	// ConditionReady summarises the policy: True when keys and the revocation store are ready.
	ConditionReady = "Ready"
	// ConditionKeysReady is True when an active signing key is loaded and published.
	ConditionKeysReady = "KeysReady"
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
	EventShardNearBudget      = "ShardNearBudget"
	EventRefreshTokenReuse    = "RefreshTokenReuse"
	EventRevocationApplied    = "RevocationApplied"
)

// Labels and annotations tokenwarden puts on the objects it owns or reads.
const (
	// LabelPolicy names the TokenPolicy an object belongs to.
	LabelPolicy = "tokenwarden.io/policy"
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

	// AnnotationActiveKey names the kid that signs, in a signing-key Secret.
	AnnotationActiveKey = "tokenwarden.io/active-key"
	// AnnotationSurplusSince marks, on a revocation shard beyond the shard count, when it became surplus:
	// it is deleted once empty and one refresh lifetime later.
	AnnotationSurplusSince = "tokenwarden.io/surplus-since"
	// AnnotationKeySchedule holds, in a generated signing-key Secret, the rotation times of its keys.
	AnnotationKeySchedule = "tokenwarden.io/key-schedule"
)

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TokenRevocationSpec says what to revoke: one session, or every session of a subject that logged in
// before the TokenRevocation was created.
// +kubebuilder:validation:XValidation:rule="has(self.subject) != has(self.sessionID)",message="set exactly one of subject and sessionID"
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a TokenRevocation cannot be changed; create another"
type TokenRevocationSpec struct {
	// PolicyName is the TokenPolicy, in the same namespace, whose tokens are revoked.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	PolicyName string `json:"policyName"`

	// Subject revokes every session of this subject (the sub claim) that logged in before the
	// TokenRevocation was created.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Subject string `json:"subject,omitempty"`

	// SessionID revokes one session (the sid claim).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-]{22}\.[0-9]{1,3}$`
	// +optional
	SessionID string `json:"sessionID,omitempty"`

	// Reason is recorded with the revocation and shown by kubectl.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Reason string `json:"reason,omitempty"`
}

// TokenRevocationStatus says whether and when the revocation is in force.
type TokenRevocationStatus struct {
	// Conditions: Applied is True once the revocation is durably recorded in the policy's shards.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Target is what was revoked, "subject <sub>" or "session <sid>", for kubectl.
	// +optional
	Target string `json:"target,omitempty"`
	// AppliedAt is when the revocation was recorded.
	// +optional
	AppliedAt *metav1.Time `json:"appliedAt,omitempty"`
	// Shard is the ConfigMap the revocation was recorded in.
	// +optional
	Shard string `json:"shard,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// TokenRevocation revokes a session or a subject's sessions under a TokenPolicy, declaratively: the
// controller records it in the policy's revocation shards, and every issuer replica then refuses the
// sessions' refresh tokens and reports their tokens inactive.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=trev,categories=tokenwarden
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.spec.policyName`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.status.target`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.spec.reason`
// +kubebuilder:printcolumn:name="Applied",type=string,JSONPath=`.status.conditions[?(@.type=="Applied")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TokenRevocation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TokenRevocationSpec   `json:"spec"`
	Status TokenRevocationStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// TokenRevocationList is a list of TokenRevocation.
type TokenRevocationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TokenRevocation `json:"items"`
}

func init() {
	SchemeBuilder.Register(&TokenRevocation{}, &TokenRevocationList{})
}

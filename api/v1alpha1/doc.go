// Package v1alpha1 holds the tokenwarden.io/v1alpha1 API: the TokenPolicy a platform team declares and the
// TokenRevocation an operator files, with their validation and defaulting markers and the condition types,
// reasons and event reasons that the controller and the issuer report.
//
// +kubebuilder:object:generate=true
// +groupName=tokenwarden.io
package v1alpha1

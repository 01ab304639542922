package issuer

import (
	"context"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/issuer/token"
)

// Policy is everything the issuer needs to serve one TokenPolicy. It is immutable: a change to the
// policy, its keys or its users builds a new one.
type Policy struct {
	// Key names the policy.
	Key types.NamespacedName
	// State names the policy's revocation objects: the issuer's namespace and the policy's object prefix
	// (the key of the policy in the revocation store).
	State types.NamespacedName
	// Object is the TokenPolicy as observed (for events); never modified.
	Object *v1alpha1.TokenPolicy
	// Issuer is the iss of the policy's tokens: <external URL>/<namespace>/<name>.
	Issuer string
	// Codec mints and verifies the policy's tokens with its current keys.
	Codec *token.Codec
	// Keys are the keys Codec was built from; jwks.json publishes their public halves.
	Keys *keys.Set
	// Users checks passwords; nil when the policy has no password Secret or the controller has not
	// materialised it (password login is off).
	Users PasswordChecker
	// Subjects are the ServiceAccounts and Pods the policy's sessions may be bound to, as the controller
	// materialised them; nil when it has not (the policy allows none, or not yet).
	Subjects Subjects
}

// Subjects says which of the ServiceAccounts a policy allows exist now, and which of their Pods.
type Subjects interface {
	// ServiceAccountUID is the UID of ServiceAccount namespace/name, or false when it does not exist (or
	// the policy does not allow it).
	ServiceAccountUID(namespace, name string) (string, bool)
	// PodExists reports whether a Pod of an allowed ServiceAccount with this UID exists.
	PodExists(uid string) bool
}

// Spec is the policy's spec.
func (p *Policy) Spec() *v1alpha1.TokenPolicySpec { return &p.Object.Spec }

// PasswordChecker checks a username and password. Implementations take the same time for an unknown
// user as for a wrong password.
type PasswordChecker interface {
	Check(username, password string) bool
	// Fingerprint is the fingerprint of username's current password hash (login.Fingerprint), or false
	// when there is no such user.
	Fingerprint(username string) (string, bool)
}

// Policies finds the policies the issuer serves.
type Policies interface {
	// Get returns the policy namespace/name, or false when it does not exist or its keys are not loaded.
	Get(namespace, name string) (*Policy, bool)
	// Ready reports whether the caches are synced and keys loaded.
	Ready() bool
}

// Authenticator verifies a Kubernetes ServiceAccount token (with a TokenReview) for the given audience.
type Authenticator interface {
	// Authenticate returns the ServiceAccount the token belongs to, or an error when it is not a valid
	// ServiceAccount token for audience.
	Authenticate(ctx context.Context, token, audience string) (ServiceAccount, error)
}

// ServiceAccount is who a reviewed ServiceAccount token belongs to: the ServiceAccount (its UID tells one
// from another of the same name created later) and, for a token bound to a Pod, that Pod.
type ServiceAccount struct {
	Namespace, Name, UID string
	// PodName and PodUID name the Pod the token was bound to; empty for a token not bound to one.
	PodName, PodUID string
}

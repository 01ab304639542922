package v1alpha1

import (
	"crypto/sha256"
	"encoding/base32"
	"slices"
	"strings"
)

// IssuerURL is the iss of the policy's tokens and the base of its endpoints when the issuer is reached at
// base: base without trailing slashes, then /<namespace>/<name>.
func (p *TokenPolicy) IssuerURL(base string) string {
	return strings.TrimRight(base, "/") + "/" + p.Namespace + "/" + p.Name
}

// SigningSecretName is the Secret, in the policy's namespace, that holds its signing keys:
// spec.signing.secretName, or <name>-signing-keys.
func (p *TokenPolicy) SigningSecretName() string {
	if p.Spec.Signing.SecretName != "" {
		return p.Spec.Signing.SecretName
	}
	return p.Name + "-signing-keys"
}

// UsersSecretName is the Secret, in the policy's namespace, of usernames and bcrypt hashes; "" when
// password login is off.
func (p *TokenPolicy) UsersSecretName() string { return p.Spec.Login.PasswordSecretName }

// ObjectPrefix is the prefix of the names of the objects materialised for the policy in the issuer's
// namespace (its signing keys, its login material, its revocation objects): <namespace>.<name>.<digest>,
// where the digest covers the namespace, the name and the UID. So two policies never share an object, a
// policy deleted and created again under the same name starts afresh, and a person reading the issuer's
// namespace sees whose objects they are. Long namespaces and names are shortened (the digest still covers
// them whole) so that the prefix is at most 63 characters: it is also the value of LabelObjectPrefix.
func (p *TokenPolicy) ObjectPrefix() string {
	sum := sha256.Sum256([]byte(p.Namespace + "/" + p.Name + "/" + string(p.UID)))
	digest := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))[:13]
	return shorten(p.Namespace, 20) + "." + shorten(p.Name, 28) + "." + digest
}

// shorten cuts s to at most n characters, ending on a letter or digit as DNS names must.
func shorten(s string, n int) string {
	if len(s) > n {
		s = strings.TrimRight(s[:n], "-.")
	}
	return s
}

// AllowsPolicy reports whether the value of an AnnotationAllowedPolicies annotation lists the policy name:
// a comma-separated list of TokenPolicy names of the Secret's namespace; spaces around names are ignored.
func AllowsPolicy(annotation, name string) bool {
	return slices.ContainsFunc(strings.Split(annotation, ","), func(n string) bool { return strings.TrimSpace(n) == name })
}

// IssuerKeysSecretName is the Secret of the issuer's namespace that holds the policy's signing keys, as the
// controller validated them.
func (p *TokenPolicy) IssuerKeysSecretName() string { return p.ObjectPrefix() + "-signing-keys" }

// IssuerUsersSecretName is the Secret of the issuer's namespace that holds the policy's users and their
// bcrypt hashes, as the controller validated them.
func (p *TokenPolicy) IssuerUsersSecretName() string { return p.ObjectPrefix() + "-users" }

// IssuerSubjectsConfigMapName is the ConfigMap of the issuer's namespace that says which of the
// ServiceAccounts the policy lets exchange their tokens exist (with their UIDs), and which of their Pods.
func (p *TokenPolicy) IssuerSubjectsConfigMapName() string { return p.ObjectPrefix() + "-subjects" }

package issuer

import (
	"net/http"
)

// introspectionAuthMethod names how introspection callers authenticate: a Kubernetes ServiceAccount token
// as Bearer credentials. No registered client authentication method says that, so this is an extension
// value (RFC 8414 section 2 allows them).
const introspectionAuthMethod = "kubernetes_service_account_token"

// metadata is the authorization server metadata (RFC 8414) and, the same document, the OpenID Provider
// metadata (OpenID Connect Discovery 1.0) that verifiers such as github.com/coreos/go-oidc read: they
// need issuer and jwks_uri, and take the signing algorithms from id_token_signing_alg_values_supported.
type metadata struct {
	Issuer                                    string   `json:"issuer"`
	TokenEndpoint                             string   `json:"token_endpoint"`
	JWKSURI                                   string   `json:"jwks_uri"`
	RevocationEndpoint                        string   `json:"revocation_endpoint"`
	IntrospectionEndpoint                     string   `json:"introspection_endpoint"`
	GrantTypesSupported                       []string `json:"grant_types_supported"`
	ResponseTypesSupported                    []string `json:"response_types_supported"`
	SubjectTypesSupported                     []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported          []string `json:"id_token_signing_alg_values_supported"`
	TokenEndpointAuthMethodsSupported         []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported    []string `json:"revocation_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethodsSupported []string `json:"introspection_endpoint_auth_methods_supported"`
	// BrowserSession is present when the policy has the browser mode (an extension member).
	BrowserSession *browserMetadata `json:"tokenwarden_browser_session,omitempty"`
}

// serveDiscovery answers both well-known documents. Grant types follow the policy: password only with a
// password Secret, token exchange only with ServiceAccounts listed.
func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	p, e := s.policy(r)
	if e != nil {
		writeError(w, e)
		return
	}
	spec := p.Spec()
	var grants []string
	if p.Users != nil {
		grants = append(grants, grantPassword)
	}
	grants = append(grants, grantRefreshToken)
	if len(spec.Login.ServiceAccounts) > 0 {
		grants = append(grants, grantTokenExchange)
	}
	alg := string(spec.Signing.Algorithm)
	if p.Keys != nil {
		alg = string(p.Keys.Algorithm) // what the loaded keys sign with, the spec's default applied
	}
	w.Header().Set("Cache-Control", "public, max-age=60")
	writeJSON(w, http.StatusOK, metadata{
		Issuer:                p.Issuer,
		TokenEndpoint:         p.Issuer + "/token",
		JWKSURI:               p.Issuer + "/jwks.json",
		RevocationEndpoint:    p.Issuer + "/revoke",
		IntrospectionEndpoint: p.Issuer + "/introspect",
		GrantTypesSupported:   grants,
		// There is no authorization endpoint, so no response type is supported. The member is required
		// by both specifications; an empty list says so truthfully, where "token" or "id_token" would
		// promise an endpoint that does not exist.
		ResponseTypesSupported:                    []string{},
		SubjectTypesSupported:                     []string{"public"},
		IDTokenSigningAlgValuesSupported:          []string{alg},
		TokenEndpointAuthMethodsSupported:         []string{"none"},
		RevocationEndpointAuthMethodsSupported:    []string{"none"},
		IntrospectionEndpointAuthMethodsSupported: []string{introspectionAuthMethod},
		BrowserSession:                            s.browserOf(p).metadata(),
	})
}

// serveJWKS publishes the public keys of the policy (none for HS256, whose key is a shared secret).
// Verifiers may cache it for a minute: a key is published well before it signs.
func (s *Server) serveJWKS(w http.ResponseWriter, r *http.Request) {
	p, e := s.policy(r)
	if e != nil {
		writeError(w, e)
		return
	}
	if p.Keys == nil {
		s.logger(p).Error(nil, "The policy has no key set to publish")
		writeError(w, unavailable("the policy's keys are not loaded"))
		return
	}
	set, err := p.Keys.PublicJWKS()
	if err != nil {
		s.logger(p).Error(err, "Encoding the public keys failed")
		writeError(w, newError(http.StatusInternalServerError, errServerError, "the keys could not be published"))
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=60")
	writeJSON(w, http.StatusOK, set)
}

package v1alpha1

// BrowserSpec turns on the browser mode of a policy's JSON API (POST {iss}/login, /refresh and /logout)
// for single-page apps: the refresh token travels only in an HttpOnly cookie that the page's scripts
// cannot read, and pages of the allowed origins may call the API across origins (CORS with credentials).
// A request that the cookie authenticates must come from an allowed origin with the application/json
// content type, so that no other page can make the browser spend the cookie (CSRF).
// +kubebuilder:validation:XValidation:rule=`!has(self.cookie) || !has(self.cookie.secure) || self.cookie.secure || self.allowedOrigins.all(o, o.matches(r'^http://(localhost|127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|\[::1\])(:[0-9]{1,5})?$'))`,message="may be false only when every allowedOrigins entry is a loopback http origin (http://localhost, http://127.0.0.1 or http://[::1], with any port)",fieldPath=".cookie.secure",reason="FieldValueForbidden"
type BrowserSpec struct {
	// AllowedOrigins are the origins whose pages may call the JSON API with the cookie: each exactly as
	// a browser sends it in the Origin header, scheme://host[:port] in lower case, without a default port,
	// path, trailing slash, query or wildcard. The cookie is SameSite, so an origin must also be on the
	// same site (registrable domain) as the issuer for the browser to send it.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	AllowedOrigins []BrowserOrigin `json:"allowedOrigins"`

	// Cookie configures the cookie that holds the refresh token. It is always HttpOnly; its Path is the
	// path of the policy's issuer URL; its Max-Age is the refresh token's remaining life; its name is
	// __Secure-tokenwarden-refresh (__Host-tokenwarden-refresh when the path is /), or
	// tokenwarden-refresh when it is not Secure.
	// +kubebuilder:default={}
	// +optional
	Cookie BrowserCookieSpec `json:"cookie,omitzero"`
}

// BrowserOrigin is a web origin, scheme://host[:port], as browsers serialise it in the Origin header.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:XValidation:rule="!self.contains('*')",message="must not contain a wildcard: list every origin exactly",reason="FieldValueInvalid"
// +kubebuilder:validation:XValidation:rule=`self.matches(r'^https?://([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$')`,message="must be an origin, http(s)://host[:port] in lower case, without path, trailing slash, query or fragment",reason="FieldValueInvalid"
// +kubebuilder:validation:XValidation:rule="!self.endsWith(':0') && !(self.startsWith('https://') && self.endsWith(':443')) && !(self.startsWith('http://') && self.endsWith(':80'))",message="must leave out the scheme's default port, as browsers do, and name a port other than 0",reason="FieldValueInvalid"
type BrowserOrigin string

// CookieSameSite is the SameSite attribute of the refresh cookie. None is not offered: it would let any
// site's requests carry the cookie.
// +kubebuilder:validation:Enum=Strict;Lax
type CookieSameSite string

const (
	// SameSiteStrict sends the cookie only on requests from the issuer's own site. The default.
	SameSiteStrict CookieSameSite = "Strict"
	// SameSiteLax also sends it on top-level navigations from other sites.
	SameSiteLax CookieSameSite = "Lax"
)

// BrowserCookieSpec configures the refresh cookie.
type BrowserCookieSpec struct {
	// Secure restricts the cookie to HTTPS (browsers also treat http://localhost and http://127.0.0.1 as
	// secure). It may be false only when every allowed origin is a loopback http origin, and even then
	// the issuer honours it only in the dev mode (make run); elsewhere the cookie is Secure anyway.
	// +kubebuilder:default=true
	// +optional
	Secure *bool `json:"secure,omitempty"`

	// SameSite is Strict (the default) or Lax.
	// +kubebuilder:default=Strict
	// +optional
	SameSite CookieSameSite `json:"sameSite,omitempty"`
}

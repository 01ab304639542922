package issuer_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
	"github.com/tokenwarden/tokenwarden/internal/keys"
	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/issuer"
)

func TestDiscoveryDocuments(t *testing.T) {
	f := newFixture(t, options{})
	for _, doc := range []string{"openid-configuration", "oauth-authorization-server"} {
		t.Run(doc, func(t *testing.T) {
			f := f.with(t)
			tests := []struct {
				policy *issuer.Policy
				grants []any
				alg    string
			}{
				{f.policy, []any{"password", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"}, "EdDSA"},
				{f.other, []any{"refresh_token"}, "EdDSA"},
			}
			for _, tt := range tests {
				r := f.do(http.MethodGet, tt.policy.Issuer+"/.well-known/"+doc, "", nil, nil)
				if r.status != http.StatusOK || r.header.Get("Cache-Control") != "public, max-age=60" {
					t.Fatalf("got %d %s, Cache-Control %q; want 200, public, max-age=60", r.status, r.body, r.header.Get("Cache-Control"))
				}
				iss := tt.policy.Issuer
				want := map[string]any{
					"issuer": iss, "token_endpoint": iss + "/token", "jwks_uri": iss + "/jwks.json",
					"revocation_endpoint": iss + "/revoke", "introspection_endpoint": iss + "/introspect",
					"grant_types_supported": tt.grants, "response_types_supported": []any{}, "subject_types_supported": []any{"public"},
					"id_token_signing_alg_values_supported":         []any{tt.alg},
					"token_endpoint_auth_methods_supported":         []any{"none"},
					"revocation_endpoint_auth_methods_supported":    []any{"none"},
					"introspection_endpoint_auth_methods_supported": []any{"kubernetes_service_account_token"},
				}
				if got := r.object(t); !reflect.DeepEqual(got, want) {
					t.Errorf("got %v; want %v", got, want)
				}
			}
		})
	}
	expectError(t, f.do(http.MethodGet, "/apps/nope/.well-known/openid-configuration", "", nil, nil), http.StatusNotFound, "not_found")
}

func TestJWKSPublishesThePublicKeys(t *testing.T) {
	for _, alg := range []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.RS256, v1alpha1.HS256} {
		t.Run(string(alg), func(t *testing.T) {
			f := newFixture(t, options{alg: alg})
			r := f.do(http.MethodGet, f.policy.Issuer+"/jwks.json", "", nil, nil)
			if r.status != http.StatusOK || r.header.Get("Cache-Control") != "public, max-age=60" {
				t.Fatalf("got %d %s, Cache-Control %q; want 200, public, max-age=60", r.status, r.body, r.header.Get("Cache-Control"))
			}
			var got keys.JWKS
			if err := json.Unmarshal(r.body, &got); err != nil {
				t.Fatalf("decode %s: %v", r.body, err)
			}
			want, _ := f.policy.Keys.PublicJWKS()
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v; want %+v", got, want)
			}
			if alg == v1alpha1.HS256 && (len(got.Keys) != 0 || strings.Contains(string(r.body), "\"k\"")) {
				t.Errorf("got %s for HS256; want no keys", r.body)
			}
			if alg != v1alpha1.HS256 && (len(got.Keys) != 1 || got.Keys[0].KeyID != f.policy.Keys.Active.ID) {
				t.Errorf("got %s; want the active key %s", r.body, f.policy.Keys.Active.ID)
			}
		})
	}
}

func TestHealthAndReadiness(t *testing.T) {
	f := newFixture(t, options{})
	if r := f.do(http.MethodGet, "/healthz", "", nil, nil); r.status != http.StatusOK {
		t.Errorf("got /healthz %d; want 200", r.status)
	}
	if r := f.do(http.MethodGet, "/readyz", "", nil, nil); r.status != http.StatusOK {
		t.Errorf("got /readyz %d while ready; want 200", r.status)
	}
	f.policies.setReady(false)
	expectError(t, f.do(http.MethodGet, "/readyz", "", nil, nil), http.StatusServiceUnavailable, "temporarily_unavailable")
}

func TestMetricsAreServedApartFromTheEndpoints(t *testing.T) {
	f := newFixture(t, options{})
	a := f.login()
	f.mustRefresh(a.RefreshToken)
	expectError(t, f.refresh(a.RefreshToken), http.StatusBadRequest, "invalid_grant")
	if r := f.do(http.MethodGet, "/metrics", "", nil, nil); r.status != http.StatusNotFound {
		t.Fatalf("GET /metrics on the endpoints' handler: %d; want 404 (metrics have a port of their own)", r.status)
	}
	rec := httptest.NewRecorder()
	f.server.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	r := response{status: rec.Code, body: rec.Body.Bytes()}
	if r.status != http.StatusOK {
		t.Fatalf("got %d; want 200", r.status)
	}
	for _, line := range []string{
		`tokenwarden_issuer_requests_total{endpoint="token",outcome="ok"} 2`,
		`tokenwarden_issuer_requests_total{endpoint="token",outcome="invalid_grant"} 1`,
		`tokenwarden_issuer_refreshes_total{outcome="reuse"} 1`,
		`tokenwarden_issuer_logins_total{grant="password",outcome="ok"} 1`,
		`tokenwarden_issuer_request_duration_seconds_count{endpoint="token"} 3`,
	} {
		if !strings.Contains(string(r.body), line+"\n") {
			t.Errorf("got no line %q in /metrics", line)
		}
	}
}

func TestNewServerChecksItsConfig(t *testing.T) {
	good := func() issuer.ServerConfig {
		return issuer.ServerConfig{ExternalURL: "https://issuer.example.com", Policies: &staticPolicies{policies: map[types.NamespacedName]*issuer.Policy{}},
			Store: revocation.NewMemory(), Authenticator: fakeAuth{}}
	}
	tests := []struct {
		name   string
		change func(*issuer.ServerConfig)
	}{
		{"a relative external URL", func(c *issuer.ServerConfig) { c.ExternalURL = "/issuer" }},
		{"an external URL with a query", func(c *issuer.ServerConfig) { c.ExternalURL = "https://issuer.example.com/?x=1" }},
		{"no policies", func(c *issuer.ServerConfig) { c.Policies = nil }},
		{"no store", func(c *issuer.ServerConfig) { c.Store = nil }},
		{"no authenticator", func(c *issuer.ServerConfig) { c.Authenticator = nil }},
		{"a rate limit without a burst", func(c *issuer.ServerConfig) { c.UsernameRate = issuer.RateLimit{PerSecond: 1} }},
		{"a registry that holds the metrics already", func(c *issuer.ServerConfig) {
			c.Registry = prometheus.NewRegistry()
			if _, err := issuer.NewServer(issuer.ServerConfig{ExternalURL: c.ExternalURL, Policies: c.Policies, Store: c.Store,
				Authenticator: c.Authenticator, Registry: c.Registry}); err != nil {
				t.Fatalf("first server: %v", err)
			}
		}},
	}
	if _, err := issuer.NewServer(good()); err != nil {
		t.Fatalf("got %v for a good config; want none", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.change(&cfg)
			if _, err := issuer.NewServer(cfg); err == nil {
				t.Errorf("got no error; want one")
			}
		})
	}
}

func TestHTTPServerHasTimeouts(t *testing.T) {
	s := issuer.NewHTTPServer(":8080", http.NotFoundHandler())
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.WriteTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes <= 0 {
		t.Errorf("got %+v; want every timeout and the header limit set", s)
	}
}

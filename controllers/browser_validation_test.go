package controllers

import (
	"strings"
	"testing"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

func TestTheAPIServerRefusesInvalidBrowserSpecsNamingTheField(t *testing.T) {
	ns := env.Namespace(t)
	tests := map[string]struct {
		browser string
		want    []string // every string must appear in the API server's error
	}{
		"no allowed origins": {
			browser: "{allowedOrigins: []}",
			want:    []string{"spec.browser.allowedOrigins"},
		},
		"a wildcard origin": {
			browser: "{allowedOrigins: ['https://*.example.com']}",
			want:    []string{"spec.browser.allowedOrigins[0]", "must not contain a wildcard"},
		},
		"a lone wildcard": {
			browser: "{allowedOrigins: ['*']}",
			want:    []string{"spec.browser.allowedOrigins[0]", "must not contain a wildcard"},
		},
		"an origin with a path": {
			browser: "{allowedOrigins: ['https://app.example.com/login']}",
			want:    []string{"spec.browser.allowedOrigins[0]", "must be an origin"},
		},
		"an origin with a trailing slash": {
			browser: "{allowedOrigins: ['https://app.example.com', 'https://app.example.com/']}",
			want:    []string{"spec.browser.allowedOrigins[1]", "without path, trailing slash"},
		},
		"an origin with a query": {
			browser: "{allowedOrigins: ['https://app.example.com?x=1']}",
			want:    []string{"spec.browser.allowedOrigins[0]", "must be an origin"},
		},
		"an origin in upper case": {
			browser: "{allowedOrigins: ['https://App.example.com']}",
			want:    []string{"spec.browser.allowedOrigins[0]", "lower case"},
		},
		"an origin without a scheme": {
			browser: "{allowedOrigins: ['app.example.com']}",
			want:    []string{"spec.browser.allowedOrigins[0]", "must be an origin"},
		},
		"the opaque origin null": {
			browser: "{allowedOrigins: ['null']}",
			want:    []string{"spec.browser.allowedOrigins[0]", "must be an origin"},
		},
		"an origin with the default port": {
			browser: "{allowedOrigins: ['https://app.example.com:443']}",
			want:    []string{"spec.browser.allowedOrigins[0]", "default port"},
		},
		"an origin twice": {
			browser: "{allowedOrigins: ['https://app.example.com', 'https://app.example.com']}",
			want:    []string{"spec.browser.allowedOrigins[1]", "Duplicate value"},
		},
		"SameSite None": {
			browser: "{allowedOrigins: ['https://app.example.com'], cookie: {sameSite: None}}",
			want:    []string{"spec.browser.cookie.sameSite", "Unsupported value", `"Strict"`, `"Lax"`},
		},
		"Secure off for an https origin": {
			browser: "{allowedOrigins: ['https://app.example.com'], cookie: {secure: false}}",
			want:    []string{"spec.browser.cookie.secure", "loopback http origin"},
		},
		"Secure off when one origin is not loopback": {
			browser: "{allowedOrigins: ['http://localhost:5173', 'http://app.example.com'], cookie: {secure: false}}",
			want:    []string{"spec.browser.cookie.secure", "loopback http origin"},
		},
		"Secure off for a host that only starts like localhost": {
			browser: "{allowedOrigins: ['http://localhost.example.com'], cookie: {secure: false}}",
			want:    []string{"spec.browser.cookie.secure", "loopback http origin"},
		},
	}
	i := 0
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			i++
			err := createYAML(t, ns, "metadata: {name: bad-browser-"+itoa(i)+"}\nspec: {audiences: [a], browser: "+tc.browser+"}")
			if err == nil {
				t.Fatalf("got the policy accepted; want it refused with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q; want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestTheAPIServerAcceptsBrowserSpecsAndAppliesTheirDefaults(t *testing.T) {
	f := newFixture(t)
	tests := map[string]struct {
		browser      string
		wantSecure   bool
		wantSameSite v1alpha1.CookieSameSite
	}{
		"https origins with the defaults": {
			browser:    "{allowedOrigins: ['https://app.example.com', 'https://admin.example.com:8443', 'http://[::1]:3000']}",
			wantSecure: true, wantSameSite: v1alpha1.SameSiteStrict,
		},
		"Lax": {
			browser:    "{allowedOrigins: ['https://app.example.com'], cookie: {sameSite: Lax}}",
			wantSecure: true, wantSameSite: v1alpha1.SameSiteLax,
		},
		"Secure off for loopback http origins": {
			browser:    "{allowedOrigins: ['http://localhost:5173', 'http://127.0.0.1:5173', 'http://[::1]:5173', 'http://localhost'], cookie: {secure: false}}",
			wantSecure: false, wantSameSite: v1alpha1.SameSiteStrict,
		},
	}
	i := 0
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			i++
			policy := "browser-" + itoa(i)
			if err := createYAML(t, f.ns, "metadata: {name: "+policy+"}\nspec: {audiences: [a], browser: "+tc.browser+"}"); err != nil {
				t.Fatalf("got %v; want the policy accepted", err)
			}
			b := f.get(policy).Spec.Browser
			if b == nil || b.Cookie.Secure == nil || *b.Cookie.Secure != tc.wantSecure || b.Cookie.SameSite != tc.wantSameSite {
				t.Fatalf("got spec.browser %+v; want secure %t, sameSite %s", b, tc.wantSecure, tc.wantSameSite)
			}
		})
	}
}

package controllers

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// createYAML creates a TokenPolicy from the YAML a platform team would write.
func createYAML(t *testing.T, ns, doc string) error {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte("apiVersion: tokenwarden.io/v1alpha1\nkind: TokenPolicy\n"+doc), &obj.Object); err != nil {
		t.Fatalf("test YAML does not parse: %v", err)
	}
	obj.SetNamespace(ns)
	return env.Client.Create(context.Background(), obj)
}

func TestTheAPIServerRefusesInvalidSpecsNamingTheField(t *testing.T) {
	ns := env.Namespace(t)
	tests := map[string]struct {
		spec string
		want []string // every string must appear in the API server's error
	}{
		"no audiences": {
			spec: "spec: {accessToken: {lifetime: 15m}}",
			want: []string{"spec.audiences", "Required"},
		},
		"an empty audience list": {
			spec: "spec: {audiences: []}",
			want: []string{"spec.audiences"},
		},
		"an access lifetime that is not a duration": {
			spec: "spec: {audiences: [a], accessToken: {lifetime: soon}}",
			want: []string{"spec.accessToken.lifetime"},
		},
		"an access lifetime under 30s": {
			spec: "spec: {audiences: [a], accessToken: {lifetime: 10s}}",
			want: []string{"spec.accessToken.lifetime", "must be between 30s and 24h"},
		},
		"an access lifetime over 24h": {
			spec: "spec: {audiences: [a], accessToken: {lifetime: 25h}}",
			want: []string{"spec.accessToken.lifetime", "must be between 30s and 24h"},
		},
		"a refresh lifetime not longer than the access lifetime": {
			spec: "spec: {audiences: [a], accessToken: {lifetime: 15m}, refreshToken: {lifetime: 15m}}",
			want: []string{"spec.refreshToken.lifetime", "must be longer than accessToken.lifetime"},
		},
		"a refresh lifetime that defaults below an access lifetime of 24h": {
			spec: "spec: {audiences: [a], accessToken: {lifetime: 24h}, refreshToken: {lifetime: 12h}}",
			want: []string{"spec.refreshToken.lifetime", "must be longer than accessToken.lifetime"},
		},
		"an idle timeout shorter than the access lifetime": {
			spec: "spec: {audiences: [a], refreshToken: {idleTimeout: 1m}}",
			want: []string{"spec.refreshToken.idleTimeout", "must be longer than accessToken.lifetime"},
		},
		"an idle timeout longer than the session": {
			spec: "spec: {audiences: [a], refreshToken: {lifetime: 1h, idleTimeout: 2h}}",
			want: []string{"spec.refreshToken.idleTimeout", "at most refreshToken.lifetime"},
		},
		"a reuse grace period over 60s": {
			spec: "spec: {audiences: [a], refreshToken: {reuseGracePeriod: 2m}}",
			want: []string{"spec.refreshToken.reuseGracePeriod", "must be between 0s and 60s"},
		},
		"an unknown algorithm": {
			spec: "spec: {audiences: [a], signing: {algorithm: none}}",
			want: []string{"spec.signing.algorithm", "Unsupported value", `"EdDSA"`},
		},
		"a rotation interval too short for the access lifetime": {
			spec: "spec: {audiences: [a], signing: {rotationInterval: 20m}}",
			want: []string{"spec.signing.rotationInterval", "longer than twice accessToken.lifetime"},
		},
		"a secret name that is not a Kubernetes name": {
			spec: "spec: {audiences: [a], signing: {secretName: Keys_1}}",
			want: []string{"spec.signing.secretName"},
		},
		"zero shards": {
			spec: "spec: {audiences: [a], revocation: {shards: 0}}",
			want: []string{"spec.revocation.shards", "greater than or equal to 1"},
		},
		"more than 256 shards": {
			spec: "spec: {audiences: [a], revocation: {shards: 257}}",
			want: []string{"spec.revocation.shards", "less than or equal to 256"},
		},
		"a login ServiceAccount with an invalid namespace": {
			spec: "spec: {audiences: [a], login: {serviceAccounts: [{namespace: Team_A, name: '*'}]}}",
			want: []string{"spec.login.serviceAccounts[0].namespace"},
		},
		"an introspection ServiceAccount without a name": {
			spec: "spec: {audiences: [a], introspection: {serviceAccounts: [{namespace: team-a}]}}",
			want: []string{"spec.introspection.serviceAccounts[0].name", "Required"},
		},
	}
	i := 0
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			i++
			err := createYAML(t, ns, "metadata: {name: bad-"+itoa(i)+"}\n"+tc.spec)
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

func itoa(i int) string { return strconv.Itoa(i) }

func TestTheAPIServerAppliesDefaults(t *testing.T) {
	f := newFixture(t)
	if err := createYAML(t, f.ns, "metadata: {name: minimal}\nspec: {audiences: [payments-api]}"); err != nil {
		t.Fatalf("create a minimal policy: %v", err)
	}
	s := f.get("minimal").Spec
	checks := map[string]struct{ got, want any }{
		"access lifetime":    {s.AccessToken.Lifetime.Duration.String(), "15m0s"},
		"refresh lifetime":   {s.RefreshToken.Lifetime.Duration.String(), "168h0m0s"},
		"reuse grace period": {s.RefreshToken.ReuseGracePeriod.Duration.String(), "0s"},
		"idle timeout":       {s.RefreshToken.IdleTimeout == nil, true},
		"algorithm":          {s.Signing.Algorithm, v1alpha1.EdDSA},
		"rotation interval":  {s.Signing.RotationInterval.Duration.String(), "720h0m0s"},
		"shards":             {s.Revocation.Shards, int32(4)},
	}
	for name, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v; want %v", name, c.got, c.want)
		}
	}
}

func TestTheAlgorithmCannotBeChanged(t *testing.T) {
	f := newFixture(t)
	p := f.policy("fixed", nil)
	p.Spec.Signing.Algorithm = v1alpha1.ES256
	err := env.Client.Update(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "spec.signing.algorithm") || !strings.Contains(err.Error(), "cannot be changed") {
		t.Fatalf("got %v; want the change refused naming spec.signing.algorithm", err)
	}
}

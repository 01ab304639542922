package controllers

import (
	"context"
	"encoding/json"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// TestKubectlGetShowsThePolicyAtAGlance asks the API server for the table kubectl get prints.
func TestKubectlGetShowsThePolicyAtAGlance(t *testing.T) {
	f := newFixture(t)
	f.policy("glance", func(s *v1alpha1.TokenPolicySpec) { s.Signing.Algorithm = v1alpha1.ES256 })
	f.reconcile("glance")
	active := f.get("glance").Status.ActiveKeyID

	cfg := rest.CopyConfig(env.Config)
	cfg.GroupVersion = &v1alpha1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = nil
	rc, err := rest.UnversionedRESTClientFor(withJSON(cfg))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rc.Get().AbsPath("/apis/tokenwarden.io/v1alpha1/namespaces", f.ns, "tokenpolicies", "glance").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	if len(table.Rows) != 1 {
		t.Fatalf("rows: got %d; want 1", len(table.Rows))
	}
	cells := map[string]any{}
	for i, c := range table.ColumnDefinitions {
		cells[c.Name] = table.Rows[0].Cells[i]
	}
	want := map[string]any{"Name": "glance", "Algorithm": "ES256", "Access": "15m", "Refresh": "168h",
		"Active Key": active, "Revoked": float64(0), "Ready": "True"}
	for col, w := range want {
		if cells[col] != w {
			t.Errorf("column %q: got %v; want %v", col, cells[col], w)
		}
	}
	if _, ok := cells["Age"]; !ok {
		t.Errorf("no Age column")
	}
}

func withJSON(cfg *rest.Config) *rest.Config {
	cfg.ContentType = "application/json"
	cfg.NegotiatedSerializer = serializerForTables()
	return cfg
}

func serializerForTables() runtime.NegotiatedSerializer {
	return scheme.Codecs.WithoutConversion()
}

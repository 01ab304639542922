package revocation_test

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
	"github.com/tokenwarden/tokenwarden/internal/revocation/storetest"
)

func TestMemoryConforms(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Replicas: func(t *testing.T, n, _ int) (types.NamespacedName, []revocation.Store) {
			m := revocation.NewMemory()
			out := make([]revocation.Store, n)
			for i := range out {
				out[i] = m
			}
			return types.NamespacedName{Namespace: "ns", Name: t.Name()}, out
		},
		Propagation: time.Second,
	})
}

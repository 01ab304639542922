package peer

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// KeyField is the Secret's data key that holds the peer key.
const KeyField = "key"

// keyRefresh is how often the peer key is read again, so that a new key is used within about that long.
const keyRefresh = 30 * time.Second

// LoadKeys reads the peer key from Secret name with reader (the controller keeps it) into keys: every
// second until it is found, then every keyRefresh, until ctx ends.
func LoadKeys(ctx context.Context, reader client.Reader, name types.NamespacedName, keys *Keys, log logr.Logger) {
	loaded := false
	for {
		err := loadKey(ctx, reader, name, keys)
		switch {
		case err != nil && !loaded:
			log.Info("Waiting for the peer key; decisions for journals other replicas own answer 503 meanwhile", "secret", name.String(), "reason", err.Error())
		case err != nil:
			log.V(1).Info("Reading the peer key failed; keeping the one loaded", "secret", name.String(), "error", err.Error())
		case !loaded:
			log.Info("Peer key loaded", "secret", name.String())
			loaded = true
		}
		wait := keyRefresh
		if !loaded {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func loadKey(ctx context.Context, reader client.Reader, name types.NamespacedName, keys *Keys) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s := &corev1.Secret{}
	if err := reader.Get(ctx, name, s); err != nil {
		return err
	}
	key := s.Data[KeyField]
	if len(key) < KeyMinBytes {
		return fmt.Errorf("the Secret's %q holds %d bytes, fewer than %d", KeyField, len(key), KeyMinBytes)
	}
	keys.Set(key)
	return nil
}

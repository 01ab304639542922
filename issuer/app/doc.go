// Package app wires one issuer replica together: label-selected informers over TokenPolicies, the Secrets
// they name and the revocation shards; the ConfigMap-sharded store; the policy source; the HTTP server.
// The issuer binary, the dev mode and the multi-replica tests all start replicas with it.
package app

// Package reliability injects faults into a running tokenwarden (the API server or etcd stopped and
// started again, an issuer replica killed mid-batch, conflict storms, full shards, key rotation and clock
// skew under load) and attacks it (oversize and slow requests, password guessing, secrets in logs), then
// checks that every operation it acknowledged is still in force. It runs its own control plane, so that
// stopping it disturbs no other package. docs/reliability.md says what is guaranteed and what is not.
package reliability

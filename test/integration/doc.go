// Package integration runs the controller and several issuer replicas against one real kube-apiserver and
// etcd, and checks the invariants that only hold across processes: single-use refresh tokens, revocations
// seen by every replica, nothing acknowledged lost across a restart, and standard clients working.
package integration

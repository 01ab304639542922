// Command kubectl-tokenwarden is the kubectl plugin for tokenwarden: revocation status at a glance
// (status, sessions), a token's story (inspect), and declarative revocation (revoke creates a
// TokenRevocation). It takes kubectl's own connection flags (--kubeconfig, --context, -n).
package main

// Package chart tests the two ways to install tokenwarden, the Helm chart (charts/tokenwarden) and the
// kustomize installation (config/default), against a real kube-apiserver: every rendered object passes
// server-side dry run, the values schema refuses bad values, both installations grant the same RBAC, and
// the ServiceAccounts can do only what the binaries need. It holds tests only.
package chart

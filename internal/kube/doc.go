// Package kube holds what every tokenwarden binary needs to talk to Kubernetes the same way: the scheme
// with the Kubernetes types and tokenwarden's.
package kube

// Package testenv starts the real kube-apiserver and etcd that every test touching Kubernetes runs
// against (controller-runtime's envtest, with the binaries hack/control-plane.sh builds), with the
// tokenwarden CRDs installed, and offers the small helpers those tests share.
package testenv

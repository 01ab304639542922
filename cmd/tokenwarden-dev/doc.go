// Command tokenwarden-dev is the development binary: dev runs the whole product on a local control plane
// (make run), and bench is the load tool (make bench), which runs the tokenwarden binary as its issuer
// replicas. It carries envtest and the testing package, which the production binary, tokenwarden, does not.
package main

// Package peer gives each revocation journal one writer among the issuer's replicas: an owner chosen with
// a coordination.k8s.io Lease in the issuer's namespace (Owners), an authenticated peer port over which
// the other replicas send it their decisions (Server, Client), and the revocation.Store that routes each
// decision to its journal's owner (Router).
package peer

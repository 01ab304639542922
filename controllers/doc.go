// Package controllers holds the TokenPolicy reconciler: it turns each policy into signing keys with staged
// rotation, a published JWKS ConfigMap and the revocation shard ConfigMaps, and reports all of it in the
// policy's status. It never imports the issuer.
package controllers

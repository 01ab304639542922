// Package controllers holds the TokenPolicy reconciler: it turns each policy into signing keys with staged
// rotation, a published JWKS ConfigMap and the revocation shard ConfigMaps, and reports all of it in the
// policy's status. It also keeps, in the issuer's namespace, the issuer's self-signed serving certificate
// and its replicas' peer key. It never imports the issuer.
package controllers

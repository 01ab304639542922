// Package configmap keeps revocation records in a policy's shard ConfigMaps. It holds the one code path
// that writes a shard (a compare-and-swap Update on resourceVersion, retried on conflict against a fresh
// read), used by the issuer's batched store and by the controller's housekeeping alike.
package configmap

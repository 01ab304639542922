// Package revocation owns the state behind refresh-token rotation and revocation: the records kept for a
// session and for a subject, their text form in a shard ConfigMap, the pure decisions (rotate, grace
// duplicate, reuse, revoke) that every store applies the same way, the Store interface the issuer
// uses, an in-memory Store for tests, and (in storetest) the conformance suite every Store must pass.
package revocation

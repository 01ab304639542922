// Package keys owns signing-key material: generating keys for each algorithm, reading and writing them
// in a signing-key Secret, key ids (RFC 7638 thumbprints), and the public JWK Set (RFC 7517) that resource
// servers verify against. The controller writes keys with it and the issuer reads them; neither parses
// key material anywhere else.
package keys

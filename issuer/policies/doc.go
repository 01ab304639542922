// Package policies keeps, for the issuer, a ready-to-serve issuer.Policy for every TokenPolicy it can see:
// built from label-selected informers over TokenPolicies and the Secrets they name (signing keys and
// users), rebuilt whenever one of them changes, never holding any other Secret.
package policies

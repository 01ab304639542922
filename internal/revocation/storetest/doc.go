// Package storetest is the conformance suite every revocation.Store passes: single-use refresh across
// replicas, grace-period duplicates, reuse detection, session and subject revocation, idle and absolute
// expiry, each checked on every replica.
package storetest

// Package login owns the rules for password login material: which bcrypt hashes a users Secret may hold
// (the controller checks them before it hands them to the issuer), and how the issuer checks a password so
// that an unknown user and a wrong password take the same time.
package login

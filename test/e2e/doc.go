// Package e2e drives the product from outside, as a new user would: it runs the README's `make run` as a
// process, follows the instructions it prints, and checks that Ctrl-C leaves nothing running.
package e2e

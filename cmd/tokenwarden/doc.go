// Command tokenwarden is the one binary of the product, with a subcommand per role: controller (the
// TokenPolicy controller), issuer (the token endpoints) and dev (both, on a local control plane).
package main

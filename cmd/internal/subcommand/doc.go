// Package subcommand is the command line of tokenwarden's binaries: one subcommand per role, each parsing its
// own flags into a configuration that validates before it runs. Only packages under cmd/ import it.
package subcommand

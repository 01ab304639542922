package main

import "github.com/tokenwarden/tokenwarden/cmd/internal/subcommand"

var program = subcommand.Program{
	Name: "tokenwarden-dev",
	Commands: []subcommand.Command{
		{Name: "dev", Summary: "run the whole product on a local control plane (make run)", Flags: devFlags},
		{Name: "bench", Summary: "measure throughput, latency, API writes and CPU under load on loopback (make bench)", Flags: benchFlags},
	},
	Note: "The controller and issuer subcommands are in the production binary, tokenwarden (./cmd/tokenwarden).",
}

func main() { program.Main() }

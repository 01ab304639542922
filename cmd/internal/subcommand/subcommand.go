package subcommand

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Runner is a parsed configuration ready to run.
type Runner interface {
	// Validate checks the configuration before anything starts.
	Validate() error
	// Run runs until ctx ends.
	Run(ctx context.Context) error
}

// Command is one subcommand: Flags registers its flags on fs and returns the configuration they fill.
type Command struct {
	Name, Summary string
	Flags         func(fs *flag.FlagSet) Runner
}

// Program is one binary: its name, its subcommands, and a note printed after their list.
type Program struct {
	Name     string
	Commands []Command
	Note     string
}

// Main runs the subcommand os.Args names until SIGINT or SIGTERM, and exits with status 2 if it fails.
func (p Program) Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := p.Run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", p.Name, err)
		}
		os.Exit(2)
	}
}

// Run parses args (a subcommand and its flags), validates the configuration and runs it. The usage and
// flag errors go to stderr; asking for help returns flag.ErrHelp.
func (p Program) Run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		p.usage(stderr)
		if len(args) == 0 {
			return errors.New("no subcommand")
		}
		return flag.ErrHelp
	}
	for _, c := range p.Commands {
		if c.Name != args[0] {
			continue
		}
		fs := flag.NewFlagSet(p.Name+" "+c.Name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		r := c.Flags(fs)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("%s: unexpected arguments %q", c.Name, fs.Args())
		}
		if err := r.Validate(); err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		return r.Run(ctx)
	}
	p.usage(stderr)
	return fmt.Errorf("unknown subcommand %q", args[0])
}

func (p Program) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s <subcommand> [flags]\n\nSubcommands:\n", p.Name)
	for _, c := range p.Commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.Name, c.Summary)
	}
	if p.Note != "" {
		fmt.Fprintf(w, "\n%s\n", p.Note)
	}
	fmt.Fprintf(w, "\nRun '%s <subcommand> -h' for its flags.\n", p.Name)
}

package subcommand

import (
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

// config is a Runner that records whether it ran.
type config struct {
	name string
	ran  *bool
}

func (c *config) Validate() error {
	if c.name == "" {
		return errors.New("--name is required")
	}
	return nil
}

func (c *config) Run(context.Context) error {
	*c.ran = true
	return nil
}

func TestRun(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantErr   string // "" for none
		wantHelp  bool   // the error is flag.ErrHelp
		wantRun   bool
		wantPrint []string // in what stderr receives
	}{
		{name: "no arguments print the usage and fail", args: nil, wantErr: "no subcommand",
			wantPrint: []string{"Usage: prog <subcommand>", "greet        say hello", "The other binary has more.", "Run 'prog <subcommand> -h'"}},
		{name: "help prints the usage and is not an error to report", args: []string{"-h"}, wantHelp: true, wantPrint: []string{"greet        say hello"}},
		{name: "an unknown subcommand prints the usage with its note", args: []string{"dev"}, wantErr: `unknown subcommand "dev"`,
			wantPrint: []string{"The other binary has more."}},
		{name: "a subcommand's help lists its flags", args: []string{"greet", "-h"}, wantHelp: true, wantPrint: []string{"Usage of prog greet:", "-name"}},
		{name: "an unknown flag is refused before anything runs", args: []string{"greet", "--nope"}, wantErr: "flag provided but not defined"},
		{name: "arguments after the flags are refused", args: []string{"greet", "--name", "a", "extra"}, wantErr: `greet: unexpected arguments ["extra"]`},
		{name: "an invalid configuration does not run and names its subcommand", args: []string{"greet"}, wantErr: "greet: --name is required"},
		{name: "a valid configuration runs", args: []string{"greet", "--name", "a"}, wantRun: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ran := false
			p := Program{Name: "prog", Note: "The other binary has more.", Commands: []Command{{Name: "greet", Summary: "say hello",
				Flags: func(fs *flag.FlagSet) Runner {
					c := &config{ran: &ran}
					fs.StringVar(&c.name, "name", "", "who to greet")
					return c
				}}}}
			var stderr strings.Builder
			err := p.Run(context.Background(), tt.args, &stderr)
			switch {
			case tt.wantHelp:
				if !errors.Is(err, flag.ErrHelp) {
					t.Errorf("got error %v; want flag.ErrHelp", err)
				}
			case tt.wantErr == "":
				if err != nil {
					t.Errorf("got error %v; want none", err)
				}
			case err == nil || !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("got error %v; want one containing %q", err, tt.wantErr)
			}
			if ran != tt.wantRun {
				t.Errorf("ran: got %v; want %v", ran, tt.wantRun)
			}
			for _, s := range tt.wantPrint {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr:\n%s\nwant it to contain %q", stderr.String(), s)
				}
			}
		})
	}
}

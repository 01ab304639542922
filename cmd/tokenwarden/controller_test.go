package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestTheControllerTakesAnIssuerPeerSecretNameOrNone(t *testing.T) {
	tests := map[string]struct {
		args    []string
		want    string // the Secret the controller keeps
		wantErr string // in Validate's error; "" for none
	}{
		"the default name when the flag is not given": {nil, "tokenwarden-issuer-peer", ""},
		"a name of the installation's":                {[]string{"--issuer-peer-secret=tw-issuer-peer"}, "tw-issuer-peer", ""},
		"a dotted name":                               {[]string{"--issuer-peer-secret=peer.tokenwarden"}, "peer.tokenwarden", ""},
		"empty, to keep none":                         {[]string{"--issuer-peer-secret="}, "", ""},
		"upper case":                                  {[]string{"--issuer-peer-secret=Issuer-Peer"}, "", "--issuer-peer-secret must name a Secret"},
		"a path":                                      {[]string{"--issuer-peer-secret=ns/issuer-peer"}, "", "--issuer-peer-secret must name a Secret"},
		"longer than 253 characters":                  {[]string{"--issuer-peer-secret=" + strings.Repeat("a", 254)}, "", "--issuer-peer-secret must name a Secret"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fs := flag.NewFlagSet("controller", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			c := controllerFlags(fs).(*ControllerConfig)
			args := append([]string{"--issuer-url=https://tokens.example.com", "--issuer-namespace=tokenwarden-system"}, tc.args...)
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: got %v; want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate: got %v; want an error saying %q", err, tc.wantErr)
			case tc.wantErr == "" && c.IssuerPeerSecret != tc.want:
				t.Fatalf("IssuerPeerSecret: got %q; want %q", c.IssuerPeerSecret, tc.want)
			}
		})
	}
}

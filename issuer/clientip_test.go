package issuer

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientAddressBelievesTrustedProxiesOnly(t *testing.T) {
	var trusted Prefixes
	if err := trusted.Set("10.0.0.0/8, fd00::/8,192.168.1.1"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		peer   string
		xff    []string // X-Forwarded-For headers, in order
		want   string
		proxy  Prefixes
		noList bool
	}{
		{name: "a peer that is no proxy, without the header", peer: "203.0.113.7:4711", want: "203.0.113.7"},
		{name: "a forged header from a peer that is no proxy changes nothing", peer: "203.0.113.7:4711", xff: []string{"198.51.100.1"}, want: "203.0.113.7"},
		{name: "a trusted proxy without the header is the client", peer: "10.1.2.3:80", want: "10.1.2.3"},
		{name: "a trusted proxy names the client", peer: "10.1.2.3:80", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "what the client wrote left of the hop its proxy saw is ignored", peer: "10.1.2.3:80", xff: []string{"1.1.1.1, 2.2.2.2, 198.51.100.1"}, want: "198.51.100.1"},
		{name: "trusted hops are skipped from the right", peer: "10.1.2.3:80", xff: []string{"198.51.100.1, 10.9.9.9", "192.168.1.1"}, want: "198.51.100.1"},
		{name: "only trusted hops: the leftmost", peer: "10.1.2.3:80", xff: []string{"10.0.0.5, 10.0.0.6"}, want: "10.0.0.5"},
		{name: "a hop that is no address ends the walk at the proxy that forwarded it", peer: "10.1.2.3:80", xff: []string{"198.51.100.1, unknown, 10.0.0.9"}, want: "10.0.0.9"},
		{name: "garbage right behind the peer leaves the peer", peer: "10.1.2.3:80", xff: []string{"whoever-i-want"}, want: "10.1.2.3"},
		{name: "hops with ports, IPv6 in brackets", peer: "[fd00::1]:443", xff: []string{"[2001:db8::7]:5555, 10.0.0.1:8080"}, want: "2001:db8::7"},
		{name: "an IPv4-mapped peer is its IPv4 address", peer: "[::ffff:10.1.2.3]:80", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "an IPv4-mapped client is its IPv4 address", peer: "10.1.2.3:80", xff: []string{"::ffff:198.51.100.1"}, want: "198.51.100.1"},
		{name: "a single trusted address", peer: "192.168.1.1:80", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "its neighbour is not trusted", peer: "192.168.1.2:80", xff: []string{"198.51.100.1"}, want: "192.168.1.2"},
		{name: "no trusted proxies: the peer, always", peer: "10.1.2.3:80", xff: []string{"198.51.100.1"}, want: "10.1.2.3", noList: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{}}
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			proxies := trusted
			if tt.noList {
				proxies = nil
			}
			if got := clientAddress(r, proxies); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestPrefixesParseLikeTheFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    []netip.Prefix
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "10.0.0.0/8", want: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{in: "10.1.2.3/8, 192.168.0.1", want: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.1/32")}},
		{in: "fd00::/8,::ffff:10.0.0.0/104", want: []netip.Prefix{netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("10.0.0.0/8")}},
		{in: "10.0.0.0/8,ingress", wantErr: true},
		{in: "10.0.0.0/33", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var p Prefixes
			err := p.Set(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v; want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if len(p) != len(tt.want) {
				t.Fatalf("got %v; want %v", p, tt.want)
			}
			for i := range p {
				if p[i] != tt.want[i] {
					t.Errorf("got %v; want %v", p, tt.want)
				}
			}
		})
	}
}

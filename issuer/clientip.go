package issuer

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Prefixes is a list of address ranges; as a flag, comma-separated CIDRs (a bare address is a range of
// one), and repeating the flag adds more.
type Prefixes []netip.Prefix

// String implements flag.Value.
func (p *Prefixes) String() string {
	if p == nil {
		return ""
	}
	out := make([]string, len(*p))
	for i, x := range *p {
		out[i] = x.String()
	}
	return strings.Join(out, ",")
}

// Set implements flag.Value: it adds the comma-separated ranges of s.
func (p *Prefixes) Set(s string) error {
	for _, field := range strings.Split(s, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(field)
		if err != nil {
			addr, aerr := netip.ParseAddr(field)
			if aerr != nil {
				return fmt.Errorf("%q is neither a CIDR nor an address", field)
			}
			addr = addr.Unmap()
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		if prefix.Addr().Is4In6() && prefix.Bits() >= 96 {
			prefix = netip.PrefixFrom(prefix.Addr().Unmap(), prefix.Bits()-96)
		}
		*p = append(*p, prefix.Masked())
	}
	return nil
}

// contains reports whether a is in one of the ranges.
func (p Prefixes) contains(a netip.Addr) bool {
	for _, x := range p {
		if x.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP is the address a request is throttled by: the connection's peer, unless the peer is a trusted
// proxy; then the rightmost address of X-Forwarded-For that is not itself a trusted proxy. Everything left
// of it was written by whoever the first untrusted hop is, who may write anything, so it is never read;
// nothing else (other headers, a proxy's X-Real-IP) is believed either. A hop that is not an address ends
// the walk at the trusted proxy that forwarded it, so that no one can choose a key of their own by
// sending garbage through one.
func (s *Server) clientIP(r *http.Request) string {
	return clientAddress(r, s.proxies)
}

func clientAddress(r *http.Request, trusted Prefixes) string {
	peer, ok := parseHop(r.RemoteAddr)
	if !ok {
		return r.RemoteAddr
	}
	if !trusted.contains(peer) {
		return peer.String()
	}
	client := peer
	hops := forwardedFor(r.Header)
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			break
		}
		client = a
		if !trusted.contains(a) {
			break
		}
	}
	return client.String()
}

// forwardedFor is the X-Forwarded-For list: every field of every such header, in order.
func forwardedFor(h http.Header) []string {
	var hops []string
	for _, v := range h.Values("X-Forwarded-For") {
		for _, hop := range strings.Split(v, ",") {
			if hop = strings.TrimSpace(hop); hop != "" {
				hops = append(hops, hop)
			}
		}
	}
	return hops
}

// parseHop reads an address as RemoteAddr and proxies write it: 10.0.0.1, 10.0.0.1:5678, fd00::1,
// [fd00::1] or [fd00::1]:5678. IPv4-mapped IPv6 addresses are their IPv4 address; zones are dropped.
func parseHop(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone(""), true
}

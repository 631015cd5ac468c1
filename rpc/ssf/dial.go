package ssf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// errAddressRefused is a push to an address the policy refuses.
var errAddressRefused = errors.New("push address refused")

// allowedAddr is the one rule of which addresses a push may connect to,
// for a URL whose host is urlHost; the URL check (checkPushURL) and the
// dialer both call it. It is an allow-list: a public address (publicAddr);
// a private, shared (100.64/10) or link-local unicast one (the cloud
// metadata services) only when the policy allows private receivers; a
// loopback one only when the policy allows loopback receivers and the URL
// names loopback itself (127.0.0.1, [::1], localhost), never when a name
// resolves to it (DNS rebinding). Nothing else: no multicast, unspecified,
// documentation, benchmarking, reserved or translated-to-internal address.
func (p PushURLPolicy) allowedAddr(urlHost string, ip netip.Addr) bool {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return p.AllowLoopback && loopback(urlHost)
	case p.AllowPrivate && (ip.IsPrivate() || ip.IsLinkLocalUnicast() || sharedSpace.Contains(ip)):
		return true
	}
	return publicAddr(ip)
}

// sharedSpace is the carrier-grade NAT range (RFC 6598), which clouds use
// for internal services (100.100.100.200, a metadata service).
var sharedSpace = netip.MustParsePrefix("100.64.0.0/10")

// specialPrefixes are the special-purpose ranges (IANA IPv4 and IPv6
// Special-Purpose Address Registries) that IsGlobalUnicast lets through
// and that no receiver on the Internet has. The translation ranges whose
// IPv4 is checked again (embeddedIPv4) are not listed.
var specialPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
		"64:ff9b:1::/48", "100::/64", "2001:2::/48", "2001:10::/28", "2001:20::/28", "2001:db8::/32",
		"3fff::/20", "5f00::/16", "fec0::/10",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// Translation ranges that carry an IPv4 address (embeddedIPv4).
var (
	nat64      = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052
	sixToFour  = netip.MustParsePrefix("2002::/16")    // RFC 3056
	teredo     = netip.MustParsePrefix("2001::/32")    // RFC 4380
	compatible = netip.MustParsePrefix("::/96")        // RFC 4291 §2.5.5.1, deprecated
)

// publicAddr reports whether ip is a public unicast address: global
// unicast, not private and in no special-purpose range; an address that
// carries an IPv4 one (IPv4-mapped, NAT64, 6to4, Teredo,
// IPv4-compatible) is public only if each IPv4 it carries is.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || !ip.IsGlobalUnicast() || ip.IsPrivate() {
		return false
	}
	if v4s, ok := embeddedIPv4(ip); ok {
		for _, v4 := range v4s {
			if !publicAddr(v4) {
				return false
			}
		}
		return true
	}
	for _, p := range specialPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// embeddedIPv4 returns the IPv4 addresses an IPv6 translation address
// carries: NAT64 and IPv4-compatible its last 32 bits, 6to4 bits 16-47,
// Teredo its server (bits 32-63) and its client (the last 32 bits,
// inverted).
func embeddedIPv4(ip netip.Addr) ([]netip.Addr, bool) {
	if !ip.Is6() {
		return nil, false
	}
	b := ip.As16()
	last := netip.AddrFrom4([4]byte(b[12:16]))
	switch {
	case nat64.Contains(ip), compatible.Contains(ip):
		return []netip.Addr{last}, true
	case sixToFour.Contains(ip):
		return []netip.Addr{netip.AddrFrom4([4]byte(b[2:6]))}, true
	case teredo.Contains(ip):
		client := [4]byte{^b[12], ^b[13], ^b[14], ^b[15]}
		return []netip.Addr{netip.AddrFrom4([4]byte(b[4:8])), netip.AddrFrom4(client)}, true
	}
	return nil, false
}

// dialer connects pushes only to addresses allowedAddr accepts: it
// resolves the URL's host itself and dials the first allowed address, so
// the check and the connection use the same address.
func (p PushURLPolicy) dialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			if p.allowedAddr(host, ip) {
				return d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			}
		}
		return nil, fmt.Errorf("%w: %s resolves to no address a push may reach (private and link-local ones need SSF_PUSH_ALLOW_PRIVATE, loopback a URL naming it and SSF_PUSH_ALLOW_PRIVATE)", errAddressRefused, host)
	}
}

// pushClient is the default client of pushes: no redirect (a redirect
// could leave https, or reach an address the dialer would refuse by
// name), no proxy from the environment, the dialer's address rule, and
// timeout bounding the whole exchange.
func (p PushURLPolicy) pushClient(timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           p.dialer(timeout),
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Timeout: timeout, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

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
// for a URL whose host is urlHost: a loopback address only when the URL
// names loopback itself (127.0.0.1, [::1], localhost: a receiver on the
// same machine), never when a name resolves to it (DNS rebinding);
// private, link-local (the cloud metadata service), unspecified and
// multicast addresses only when the policy allows private receivers.
func (p PushURLPolicy) allowedAddr(urlHost string, ip netip.Addr) bool {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return loopback(urlHost)
	case ip.IsUnspecified(), ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return false
	case ip.IsPrivate(), ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return p.AllowPrivate
	}
	return true
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
		return nil, fmt.Errorf("%w: %s resolves to no address a push may reach (private and link-local ones need SSF_PUSH_ALLOW_PRIVATE)", errAddressRefused, host)
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

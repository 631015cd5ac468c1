package rpc

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/auth-platform/tokenservice/rpc/auth"
)

// PublicURL is the service's public base URL, from which every absolute
// URL it publishes is made: the issuer and endpoints of the authorization
// server metadata (RFC 8414), the DPoP htu of its token endpoint, and the
// Shared Signals transmitter metadata. One value serves both, so the
// issuer a client discovers is the issuer of the SETs it receives.
//
// When it is not configured, the base is the origin a request was sent
// to, but only for a request addressed to a loopback name (localhost,
// 127.0.0.0/8, [::1]): a development service on `make run` works without
// configuration, while a service reached under any other name publishes
// nothing rather than URLs an attacker chose with the Host header.
type PublicURL struct {
	base string // "" when not configured
}

// ParsePublicURL checks a configured base URL: absolute, http or https
// (http only for a loopback host), a host, no query, fragment or user
// information. A trailing slash is dropped. "" means not configured.
func ParsePublicURL(s string) (PublicURL, error) {
	if s == "" {
		return PublicURL{}, nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return PublicURL{}, err
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "", u.Opaque != "":
		return PublicURL{}, errors.New("must be an absolute http(s) URL such as https://login.example.com")
	case u.User != nil, u.RawQuery != "", u.ForceQuery, u.Fragment != "":
		return PublicURL{}, errors.New("must not carry user information, a query or a fragment")
	case strings.Trim(u.Path, "/") != "":
		// RFC 8414 §3.1 would put the metadata of https://host/auth at
		// /.well-known/oauth-authorization-server/auth, under a path the
		// service does not own when a proxy maps /auth to it.
		return PublicURL{}, errors.New("must be an origin, without a path (serve tokend at the root of its own name)")
	case u.Scheme == "http" && !auth.LoopbackHost(u.Host):
		return PublicURL{}, errors.New("must be https unless its host is loopback (RFC 8414 §2: the issuer is an https URL)")
	}
	return PublicURL{base: strings.TrimRight(s, "/")}, nil
}

// Configured reports whether a base URL was configured.
func (p PublicURL) Configured() bool { return p.base != "" }

// Base returns the base URL for r: the configured one, or the origin of a
// request addressed to a loopback name; ok is false otherwise.
func (p PublicURL) Base(r *http.Request) (base string, ok bool) {
	if p.base != "" {
		return p.base, true
	}
	if r == nil || r.Host == "" || !auth.LoopbackHost(r.Host) {
		return "", false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + strings.ToLower(r.Host), true
}

// ErrNoPublicURL is the answer of an endpoint that publishes absolute URLs
// when none can be made (see PublicURL).
var ErrNoPublicURL = errors.New("PUBLIC_BASE_URL is not set, and the request is not addressed to a loopback name: no absolute URL can be published")

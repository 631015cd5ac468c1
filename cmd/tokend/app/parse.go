package app

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/cryptosvc"
)

// The parsers of tokend's own kinds of value; vars.go binds them to
// variables. Each stores only a value that parses whole.

// algorithm accepts a JOSE signing algorithm tokend implements.
func algorithm(p *signing.Algorithm) envvar.Parser {
	return func(v string) error {
		a, err := signing.ParseAlgorithm(v)
		if err != nil {
			return err
		}
		*p = a
		return nil
	}
}

// algorithms accepts a comma-separated list of algorithm names.
func algorithms(p *[]signing.Algorithm) envvar.Parser {
	return func(v string) error {
		var algs []signing.Algorithm
		var errs []error
		for _, name := range strings.Split(v, ",") {
			a, err := signing.ParseAlgorithm(strings.TrimSpace(name))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			algs = append(algs, a)
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		*p = algs
		return nil
	}
}

// algorithmList writes "RS256, PS256 or ES256".
func algorithmList(algs []signing.Algorithm) string {
	names := make([]string, len(algs))
	for i, a := range algs {
		names[i] = string(a)
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// kmsProvider accepts a signing backend; mock is an alias of local.
func kmsProvider(p *string) envvar.Parser {
	return func(v string) error {
		switch v {
		case "local", "mock":
			*p = "local"
		case "aws", "pkcs11", "cryptosvc":
			*p = v
		default:
			return fmt.Errorf("%q is not supported (want local, mock, aws, pkcs11 or cryptosvc)", v)
		}
		return nil
	}
}

// tokenEndpoints accepts comma-separated absolute http(s) URIs.
func tokenEndpoints(p *[]string) envvar.Parser {
	return func(v string) error {
		var uris []string
		var errs []error
		for _, u := range strings.Split(v, ",") {
			u = strings.TrimSpace(u)
			if _, err := dpop.NormalizeURI(u); err != nil {
				errs = append(errs, fmt.Errorf("%q is not an absolute http(s) URI", u))
				continue
			}
			uris = append(uris, u)
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		*p = uris
		return nil
	}
}

// publicURL accepts an absolute http(s) base URL (rpc.ParsePublicURL).
func publicURL(p *rpc.PublicURL) envvar.Parser {
	return func(v string) error {
		u, err := rpc.ParsePublicURL(v)
		*p = u
		return err
	}
}

// encryptionKey accepts the standard base64 of 32 bytes.
func encryptionKey(p *[]byte) envvar.Parser {
	return func(v string) error {
		key, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(key) != 32 {
			return errors.New("must be the standard base64 of exactly 32 bytes (openssl rand -base64 32)")
		}
		*p = key
		return nil
	}
}

// previousKeys accepts comma-separated encryption keys.
func previousKeys(p *[][]byte) envvar.Parser {
	return func(v string) error {
		var keys [][]byte
		for _, k := range strings.Split(v, ",") {
			key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k))
			if err != nil || len(key) != 32 {
				return errors.New("must be comma-separated standard base64 of 32 bytes each")
			}
			keys = append(keys, key)
		}
		*p = keys
		return nil
	}
}

// natsSync accepts always, or a positive Go duration.
func natsSync(always *bool, interval *time.Duration) envvar.Parser {
	return func(v string) error {
		if v == "always" {
			*always, *interval = true, 0
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return errors.New("must be always or a positive duration such as 2m")
		}
		*always, *interval = false, d
		return nil
	}
}

// publicKeys accepts a comma-separated list of public user nkeys; empty
// items are skipped.
func publicKeys(p *[]string) envvar.Parser {
	return func(v string) error {
		var keys []string
		var errs []error
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k == "" {
				continue
			}
			if !nkeys.IsValidPublicUserKey(k) {
				errs = append(errs, fmt.Errorf("%q is not a public user nkey (U..., from nsc or `nk -gen user -pubout`)", k))
				continue
			}
			keys = append(keys, k)
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		*p = keys
		return nil
	}
}

// hostPort accepts host:port.
func hostPort(p *string) envvar.Parser {
	return func(v string) error {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return errors.New("must be host:port")
		}
		*p = v
		return nil
	}
}

// cleanPath stores a path in its shortest form (filepath.Clean).
func cleanPath(p *string) envvar.Parser {
	return func(v string) error { *p = filepath.Clean(v); return nil }
}

// secret stores a value that is never printed.
func secret(p *Secret) envvar.Parser {
	return func(v string) error { *p = Secret(v); return nil }
}

// secretFile reads a secret from the file the value names.
func secretFile(p *Secret) envvar.Parser {
	return func(v string) error {
		s, err := readSecret(v)
		if err != nil {
			return err
		}
		*p = s
		return nil
	}
}

// namespace accepts a crypto service namespace.
func namespace(p *string) envvar.Parser {
	return func(v string) error {
		if !cryptosvc.ValidNamespace(v) {
			return errors.New("must be 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
		}
		*p = v
		return nil
	}
}

// signingKey accepts CRYPTO_SIGNING_KEY, name or name/version.
func signingKey(name *string, version *uint32) envvar.Parser {
	return func(v string) error {
		n, ver, err := cryptosvc.ParseKey(v)
		if err != nil {
			return errors.New("must be name or name/version: a name of 1 to 128 of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit, and a version from 1")
		}
		*name, *version = n, ver
		return nil
	}
}

// rateLimit accepts calls per second, 0 for unlimited.
func rateLimit(p *float64) envvar.Parser {
	return func(v string) error {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 {
			return errors.New("must be a number of calls per second, 0 for unlimited")
		}
		*p = r
		return nil
	}
}

// otlpEndpoint accepts an http or https base URL.
func otlpEndpoint(p *string) envvar.Parser {
	return func(v string) error {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("must be an http or https URL such as http://collector:4318")
		}
		*p = v
		return nil
	}
}

// grpcURL parses the address of a gRPC receiver: an http (plaintext) or
// https (TLS) URL with a host and no path.
func grpcURL(p *string) envvar.Parser {
	return func(v string) error {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
			return errors.New("must be an http or https URL with no path, such as http://collector:4317 (https for TLS)")
		}
		*p = v
		return nil
	}
}

// parseAuthMode parses AUTH_MODE; unset, compose derives it.
func (r *reading) parseAuthMode(v string) error {
	m, err := ParseAuthMode(v)
	if err != nil {
		return err
	}
	r.authMode = &m
	return nil
}

// parseSampleRatio parses OTEL_TRACES_SAMPLER_ARG as the ratio of the
// default sampler. With OTEL_TRACES_SAMPLER set, the OpenTelemetry SDK
// reads both (its argument need not be a ratio) and SampleRatio stays 0.
func (r *reading) parseSampleRatio(v string) error {
	if r.sampler != "" {
		return nil
	}
	ratio, err := strconv.ParseFloat(v, 64)
	if err != nil || ratio < 0 || ratio > 1 {
		return errors.New("must be a ratio from 0 to 1")
	}
	r.c.SampleRatio = ratio
	return nil
}

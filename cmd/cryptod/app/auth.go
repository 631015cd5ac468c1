package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"go.yaml.in/yaml/v3"

	"github.com/auth-platform/tokenservice/rpc/auth"
)

// Policy is the content of CRYPTOD_POLICY_FILE: who may call, and which
// namespaces each caller may use.
//
//	callers:
//	  - name: tokend
//	    identities: ["spiffe://example.org/ns/auth/sa/tokend"]  # mTLS
//	    api_key_sha256: ["9f86d0…"]  # sha256sum of the key, hex
//	    namespaces: ["tokenservice"]
//
// An mTLS identity is the client certificate's URI SAN (a SPIFFE ID), or
// its subject CN when it has no URI SAN, read by the same function as
// tokend's (rpc/auth.CertificateIdentity): a CN that looks like a URI
// identifies nobody. An API
// key is sent as "Authorization: Bearer <key>" and stored here only as its
// SHA-256 (rpc/auth.HashAPIKey, or sha256sum). The namespace "*" grants
// every namespace.
type Policy struct {
	Callers []Caller `yaml:"callers"`
}

// Caller is one entry of the policy.
type Caller struct {
	Name         string   `yaml:"name"`
	Identities   []string `yaml:"identities"`
	APIKeySHA256 []string `yaml:"api_key_sha256"`
	Namespaces   []string `yaml:"namespaces"`

	hashes [][]byte
}

// LoadPolicy reads and checks a policy file.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CRYPTOD_POLICY_FILE: %w", err)
	}
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("CRYPTOD_POLICY_FILE %s: %w", path, err)
	}
	if len(p.Callers) == 0 {
		return nil, fmt.Errorf("CRYPTOD_POLICY_FILE %s: no callers", path)
	}
	for i := range p.Callers {
		c := &p.Callers[i]
		if c.Name == "" || len(c.Namespaces) == 0 || len(c.Identities)+len(c.APIKeySHA256) == 0 {
			return nil, fmt.Errorf("CRYPTOD_POLICY_FILE %s: caller %d needs a name, namespaces, and identities or API keys", path, i+1)
		}
		for _, h := range c.APIKeySHA256 {
			raw, err := hex.DecodeString(strings.TrimSpace(h))
			if err != nil || len(raw) != sha256.Size {
				return nil, fmt.Errorf("CRYPTOD_POLICY_FILE %s: caller %s: an API key hash is not 64 hex digits", path, c.Name)
			}
			c.hashes = append(c.hashes, raw)
		}
	}
	return &p, nil
}

// hasAPIKeys reports whether any caller may use an API key.
func (p *Policy) hasAPIKeys() bool {
	return slices.ContainsFunc(p.Callers, func(c Caller) bool { return len(c.hashes) > 0 })
}

// mayUse reports whether c may use namespace ns.
func (c *Caller) mayUse(ns string) bool {
	return slices.Contains(c.Namespaces, ns) || slices.Contains(c.Namespaces, "*")
}

// errUnauthenticated is all an unauthenticated caller learns.
var errUnauthenticated = errors.New("unauthenticated")

// authenticate finds the caller of r: by the verified client
// certificate's identity, else by its API key. Every API key hash is
// compared, in constant time, so the time taken says nothing about which
// one nearly matched.
func (p *Policy) authenticate(r *http.Request) (*Caller, error) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		if id, err := auth.CertificateIdentity(r.TLS.VerifiedChains[0][0]); err == nil {
			for i := range p.Callers {
				if slices.Contains(p.Callers[i].Identities, id) {
					return &p.Callers[i], nil
				}
			}
		}
	}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		return nil, errUnauthenticated
	}
	sum := sha256.Sum256([]byte(key))
	var found *Caller
	for i := range p.Callers {
		for _, h := range p.Callers[i].hashes {
			if subtle.ConstantTimeCompare(sum[:], h) == 1 && found == nil {
				found = &p.Callers[i]
			}
		}
	}
	if found == nil {
		return nil, errUnauthenticated
	}
	return found, nil
}

type callerKey struct{}

// authMiddleware authenticates every request before Connect sees it;
// the handler authorizes the namespace it names.
func authMiddleware(policy func() *Policy, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := policy().authenticate(r)
		if err != nil {
			// A Connect error in the protocol the client speaks.
			_ = connect.NewErrorWriter().Write(w, r, refusals().Error(err))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

func callerFrom(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	return c
}

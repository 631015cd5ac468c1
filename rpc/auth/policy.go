package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"
)

// Bounds of a policy file, which is input from outside like any other.
const (
	maxPolicyBytes   = 1 << 20
	maxPolicyEntries = 10000
	maxNameLen       = 64
	maxIdentityLen   = 1024
	maxClientIDLen   = 128
	maxClientIDs     = 1000
	maxExtraClaims   = 64
	maxAudienceLen   = 255
)

// DefaultRateLimit returns the rate limit of a caller when neither its
// entry nor the policy's default_rate_limit sets one: 500 calls per second
// with bursts of 1000.
func DefaultRateLimit() RateLimit { return RateLimit{PerSecond: 500, Burst: 1000} }

// EndMarker is the line that must end every policy file, and appear
// nowhere else in it (see CheckComplete).
const EndMarker = "# end"

// CheckComplete returns nil if data is a whole policy file: its last
// non-blank line is EndMarker, and no earlier line is. A file read while
// it is being written (in place, or by a tool that streams it) is a
// prefix of the intended content, and a prefix of a YAML document is
// often a valid, weaker one (an entry cut before its client_ids or
// expires admits any client, forever). Every prefix of a complete file
// lacks its one marker line, so only a whole file is ever applied. The
// marker is a YAML comment, so the file stays YAML (and a JSON document
// followed by the line is YAML too). It returns an error wrapping
// ErrIncompletePolicy and ErrInvalidPolicy otherwise.
func CheckComplete(data []byte) error {
	lines := strings.Split(strings.TrimRight(string(data), " \t\r\n"), "\n")
	for i, l := range lines {
		if strings.TrimRight(l, " \t\r") != EndMarker {
			continue
		}
		if i != len(lines)-1 {
			return fmt.Errorf("%w: %w: %q on line %d, before the last line", ErrInvalidPolicy, ErrIncompletePolicy, EndMarker, i+1)
		}
		return nil
	}
	return fmt.Errorf("%w: %w: the last line is not %q (the file is being written, was cut short, or lacks the marker)", ErrInvalidPolicy, ErrIncompletePolicy, EndMarker)
}

// PolicyFile is the format of the policy file (YAML; JSON is YAML too).
// Unknown fields are errors. The file's last line must be EndMarker.
//
//	default_rate_limit: {per_second: 500, burst: 1000}  # optional
//	api_keys:
//	  - name: login-frontend
//	    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//	    roles: [issuer]
//	    client_ids: [web, ios]            # optional; absent: any client_id
//	    expires: "2027-01-01T00:00:00Z"   # optional, RFC 3339
//	    rate_limit: {per_second: 2000, burst: 4000}  # optional
//	    extra_claims: [roles, groups]     # optional: authorization claims it may set
//	  - name: orders-api
//	    sha256: 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
//	    roles: [resource-server]
//	    audiences: [orders]               # optional; absent: any audience
//	mtls:
//	  - identity: spiffe://example.org/ns/auth/sa/login
//	    name: login-frontend-mtls
//	    roles: [issuer]
//	    client_ids: [web]
//	# end
type PolicyFile struct {
	DefaultRateLimit *RateLimit    `yaml:"default_rate_limit,omitempty" json:"default_rate_limit,omitempty"`
	APIKeys          []APIKeyEntry `yaml:"api_keys,omitempty" json:"api_keys,omitempty"`
	MTLS             []MTLSEntry   `yaml:"mtls,omitempty" json:"mtls,omitempty"`
	Clients          []ClientEntry `yaml:"clients,omitempty" json:"clients,omitempty"`
}

// APIKeyEntry admits the holder of one API key.
type APIKeyEntry struct {
	// Name names the caller in logs and in the event log's actor
	// ("apikey:<name>"): 1 to 64 characters of [A-Za-z0-9._-], unique.
	Name string `yaml:"name" json:"name"`
	// SHA256 is the hex SHA-256 of the key, the only form the key is kept
	// in.
	SHA256 string `yaml:"sha256" json:"sha256"`
	// Roles are the caller's roles; at least one.
	Roles []Role `yaml:"roles" json:"roles"`
	// ClientIDs, if set, are the only client_ids the caller may mint
	// tokens for.
	ClientIDs []string `yaml:"client_ids,omitempty" json:"client_ids,omitempty"`
	// Expires, if set, is when the key stops working (RFC 3339).
	Expires string `yaml:"expires,omitempty" json:"expires,omitempty"`
	// RateLimit, if set, replaces the default rate limit for this caller.
	RateLimit *RateLimit `yaml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
	// ExtraClaims, if set, are the authorization claims (roles, groups,
	// act, …: issuer.ClassifyClaim) the caller may set through
	// GenerateTokens' extra_claims. Default none: such a claim is refused.
	ExtraClaims []string `yaml:"extra_claims,omitempty" json:"extra_claims,omitempty"`
	// Audiences, if set, are the only token audiences a resource server
	// may validate or introspect tokens for: a token for none of them is
	// invalid (ValidateDPoP) or inactive (IntrospectToken), RFC 7662 §4.
	Audiences []string `yaml:"audiences,omitempty" json:"audiences,omitempty"`
}

// MTLSEntry admits the holder of a client certificate with one identity.
type MTLSEntry struct {
	// Identity is the certificate's URI SAN (a SPIFFE ID, say), or its
	// subject CN when it has no URI SAN; unique.
	Identity string `yaml:"identity" json:"identity"`
	// Name names the entry in logs; the actor is "mtls:<identity>".
	Name        string     `yaml:"name" json:"name"`
	Roles       []Role     `yaml:"roles" json:"roles"`
	ClientIDs   []string   `yaml:"client_ids,omitempty" json:"client_ids,omitempty"`
	RateLimit   *RateLimit `yaml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
	ExtraClaims []string   `yaml:"extra_claims,omitempty" json:"extra_claims,omitempty"`
	Audiences   []string   `yaml:"audiences,omitempty" json:"audiences,omitempty"`
}

// RateLimit is a token bucket: PerSecond calls per second on average, Burst
// at once.
type RateLimit struct {
	PerSecond float64 `yaml:"per_second" json:"per_second"`
	Burst     int     `yaml:"burst" json:"burst"`
}

func (r *RateLimit) validate() error {
	if r == nil {
		return nil
	}
	if !(r.PerSecond > 0) || r.PerSecond > 1e9 {
		return errors.New("rate_limit.per_second must be a positive number")
	}
	if r.Burst < 1 || r.Burst > 1e9 {
		return errors.New("rate_limit.burst must be at least 1")
	}
	return nil
}

// policy is one parsed, validated version of the policy file. It is never
// modified after parsing.
type policy struct {
	hash         [32]byte      // of the file's bytes
	replaced     chan struct{} // closed when a newer policy replaces this one
	defaultLimit RateLimit
	keys         map[uint64][]apiKey // by the first 8 bytes of the key hash
	mtls         map[string]Identity // by certificate identity
	// clients are the OAuth clients of the standard endpoints, by
	// client_id and (tls_client_auth) by certificate identity.
	clients           map[string]client
	clientsByIdentity map[string]client
}

type apiKey struct {
	hash    [32]byte
	expires time.Time // zero: never
	id      Identity
}

// ParsePolicy parses and validates a whole policy file (CheckComplete).
// Every error wraps ErrInvalidPolicy and names the entry at fault.
func ParsePolicy(data []byte) (*PolicyFile, error) {
	_, f, err := parsePolicy(data)
	return f, err
}

func parsePolicy(data []byte) (*policy, *PolicyFile, error) {
	if len(data) > maxPolicyBytes {
		return nil, nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidPolicy, maxPolicyBytes)
	}
	if err := CheckComplete(data); err != nil {
		return nil, nil, err
	}
	var f PolicyFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidPolicy}, args...)...)
	}
	if n := len(f.APIKeys) + len(f.MTLS) + len(f.Clients); n > maxPolicyEntries {
		return nil, nil, bad("%d entries, at most %d", n, maxPolicyEntries)
	}
	p := &policy{hash: sha256.Sum256(data), replaced: make(chan struct{}), defaultLimit: DefaultRateLimit(), keys: map[uint64][]apiKey{}, mtls: map[string]Identity{},
		clients: map[string]client{}, clientsByIdentity: map[string]client{}}
	if f.DefaultRateLimit != nil {
		if err := f.DefaultRateLimit.validate(); err != nil {
			return nil, nil, bad("default_rate_limit: %v", err)
		}
		p.defaultLimit = *f.DefaultRateLimit
	}
	names := map[string]bool{}
	for i, e := range f.APIKeys {
		where := fmt.Sprintf("api_keys[%d] (%q)", i, e.Name)
		if err := validName(e.Name); err != nil {
			return nil, nil, bad("%s: name %v", where, err)
		}
		if names[e.Name] {
			return nil, nil, bad("%s: duplicate name", where)
		}
		names[e.Name] = true
		raw, err := hex.DecodeString(e.SHA256)
		if err != nil || len(raw) != sha256.Size {
			return nil, nil, bad("%s: sha256 must be 64 hex digits", where)
		}
		k := apiKey{}
		copy(k.hash[:], raw)
		prefix := binary.BigEndian.Uint64(k.hash[:8])
		for _, other := range p.keys[prefix] {
			if other.hash == k.hash {
				return nil, nil, bad("%s: same key as %q", where, other.id.Name)
			}
		}
		if e.Expires != "" {
			if k.expires, err = time.Parse(time.RFC3339, e.Expires); err != nil {
				return nil, nil, bad("%s: expires must be an RFC 3339 time", where)
			}
		}
		if k.id, err = entryIdentity(KindAPIKey, e.Name, e.Name, e.Roles, e.ClientIDs, e.ExtraClaims, e.Audiences, e.RateLimit); err != nil {
			return nil, nil, bad("%s: %v", where, err)
		}
		k.id.Expires = k.expires
		p.keys[prefix] = append(p.keys[prefix], k)
	}
	for i, e := range f.MTLS {
		where := fmt.Sprintf("mtls[%d] (%q)", i, e.Identity)
		if err := validIdentity(e.Identity); err != nil {
			return nil, nil, bad("%s: identity %v", where, err)
		}
		if _, dup := p.mtls[e.Identity]; dup {
			return nil, nil, bad("%s: duplicate identity", where)
		}
		if err := validName(e.Name); err != nil {
			return nil, nil, bad("%s: name %v", where, err)
		}
		id, err := entryIdentity(KindMTLS, e.Name, e.Identity, e.Roles, e.ClientIDs, e.ExtraClaims, e.Audiences, e.RateLimit)
		if err != nil {
			return nil, nil, bad("%s: %v", where, err)
		}
		p.mtls[e.Identity] = id
	}
	for i, e := range f.Clients {
		where := fmt.Sprintf("clients[%d] (%q)", i, e.ClientID)
		c, err := parseClient(e)
		if err != nil {
			return nil, nil, bad("%s: %v", where, err)
		}
		if _, dup := p.clients[e.ClientID]; dup {
			return nil, nil, bad("%s: duplicate client_id", where)
		}
		p.clients[e.ClientID] = c
		if e.Identity != "" {
			if _, dup := p.clientsByIdentity[e.Identity]; dup {
				return nil, nil, bad("%s: identity of another client", where)
			}
			p.clientsByIdentity[e.Identity] = c
		}
	}
	return p, &f, nil
}

// entryIdentity checks the fields an entry of any kind may have; roles
// may be empty only for a client (KindClient).
func entryIdentity(kind Kind, name, subject string, roles []Role, clientIDs, extraClaims, audiences []string, limit *RateLimit) (Identity, error) {
	if len(roles) == 0 && kind != KindClient {
		return Identity{}, errors.New("no roles")
	}
	for _, r := range roles {
		if !validRole(r) {
			return Identity{}, fmt.Errorf("unknown role %q (want issuer, resource-server, admin or receiver)", r)
		}
	}
	if len(clientIDs) > maxClientIDs {
		return Identity{}, fmt.Errorf("more than %d client_ids", maxClientIDs)
	}
	for _, c := range clientIDs {
		if c == "" || len(c) > maxClientIDLen {
			return Identity{}, fmt.Errorf("client_id %q must be 1 to %d bytes", c, maxClientIDLen)
		}
	}
	if len(extraClaims) > maxExtraClaims {
		return Identity{}, fmt.Errorf("more than %d extra_claims", maxExtraClaims)
	}
	for _, c := range extraClaims {
		if c == "" || len(c) > maxNameLen {
			return Identity{}, fmt.Errorf("extra_claims name %q must be 1 to %d bytes", c, maxNameLen)
		}
	}
	if len(audiences) > maxClientIDs {
		return Identity{}, fmt.Errorf("more than %d audiences", maxClientIDs)
	}
	for _, a := range audiences {
		if a == "" || len(a) > maxAudienceLen {
			return Identity{}, fmt.Errorf("audience %q must be 1 to %d bytes", a, maxAudienceLen)
		}
	}
	if err := limit.validate(); err != nil {
		return Identity{}, err
	}
	return Identity{Kind: kind, Name: name, Subject: subject, Roles: roles, ClientIDs: clientIDs, ExtraClaims: extraClaims, Audiences: audiences, RateLimit: limit}, nil
}

// validName accepts what can be written as is in a log line and in the
// event log's actor header.
func validName(s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("must be 1 to %d characters", maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return errors.New("may hold only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// validIdentity accepts printable ASCII without surrounding spaces, which
// URI SANs are and which common names usually are.
func validIdentity(s string) error {
	if s == "" || len(s) > maxIdentityLen {
		return fmt.Errorf("must be 1 to %d bytes", maxIdentityLen)
	}
	if strings.TrimSpace(s) != s {
		return errors.New("has surrounding spaces")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return errors.New("may hold only printable ASCII")
		}
	}
	return nil
}

// lookupKey returns the identity of an API key, comparing hashes in
// constant time. The map lookup by hash prefix reveals through its timing
// at most which prefix of SHA-256(presented key) exists, which says nothing
// about any key.
func (p *policy) lookupKey(key string, now time.Time) (Identity, error) {
	sum := sha256.Sum256([]byte(key))
	for _, k := range p.keys[binary.BigEndian.Uint64(sum[:8])] {
		if constantTimeEqual(sum[:], k.hash[:]) {
			if !k.expires.IsZero() && !now.Before(k.expires) {
				return k.id, ErrExpiredCredential
			}
			return k.id, nil
		}
	}
	return Identity{}, ErrUnknownCredential
}

// Policy holds the current policy file and replaces it atomically when the
// file changes (Reload, Watch). A file that does not parse never replaces
// a good one. It is safe for concurrent use.
type Policy struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[policy]

	mu       sync.Mutex // serialises reloads
	lastSeen [32]byte   // hash of the last content read, good or bad
	lastErr  string     // last read error, reported once
}

// LoadPolicy reads and parses the policy file at path. log receives the
// outcome of later reloads (default slog.Default()). It returns an error
// wrapping ErrInvalidPolicy if the file does not parse.
func LoadPolicy(path string, log *slog.Logger) (*Policy, error) {
	if log == nil {
		log = slog.Default()
	}
	p := &Policy{path: path, log: log}
	data, err := readBounded(path, maxPolicyBytes)
	if err != nil {
		return nil, fmt.Errorf("auth: policy file: %w", err)
	}
	parsed, _, err := parsePolicy(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p.cur.Store(parsed)
	p.lastSeen = parsed.hash
	return p, nil
}

// Reload reads the file again and, if its content changed and parses,
// makes it the current policy. On error the previous policy stays in force
// and the error is returned (wrapping ErrInvalidPolicy for a bad file).
// Calls in flight keep the policy they started with. Call it on SIGHUP.
func (p *Policy) Reload() error {
	_, err := p.reload(true)
	return err
}

// reload returns whether its outcome is news worth reporting: a content or
// a read error not seen before. With force it parses even a content
// already seen (and refused).
func (p *Policy) reload(force bool) (news bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	data, err := readBounded(p.path, maxPolicyBytes)
	if err != nil {
		news = err.Error() != p.lastErr
		p.lastErr, p.lastSeen = err.Error(), [32]byte{}
		return news, fmt.Errorf("auth: policy file: %w", err)
	}
	p.lastErr = ""
	sum := sha256.Sum256(data)
	news = sum != p.lastSeen
	p.lastSeen = sum
	if sum == p.cur.Load().hash || (!news && !force) {
		return news, nil
	}
	parsed, _, err := parsePolicy(data)
	if err != nil {
		return true, fmt.Errorf("%s: %w", p.path, err)
	}
	// Streams of callers bound to the previous policy check their caller
	// again (Guard.bindCaller).
	close(p.cur.Swap(parsed).replaced)
	p.log.Info("caller policy reloaded", "file", p.path, "api_keys", countKeys(parsed), "mtls_identities", len(parsed.mtls), "clients", len(parsed.clients))
	return true, nil
}

func countKeys(p *policy) int {
	n := 0
	for _, ks := range p.keys {
		n += len(ks)
	}
	return n
}

// Watch checks the file every interval (default 1 s) and reloads it when
// its content changed; a content is parsed once, so a bad file is reported
// (logged at error level) once until it changes again, while the previous
// policy stays in force. Watch reads and hashes the whole file each time:
// that catches every kind of replacement (rename, symlink swap of a
// mounted secret, in-place write within one mtime tick) at the cost of
// reading a few KB. A file that does not end with EndMarker is not
// applied (CheckComplete): it is what a file being written looks like for
// a moment, and it is reported once, like any bad content. It returns
// ctx's error when ctx ends.
func (p *Policy) Watch(ctx context.Context, interval time.Duration) error {
	return poll(ctx, interval, func() {
		if news, err := p.reload(false); err != nil && news {
			p.log.Error("caller policy not reloaded; the previous policy stays in force", "file", p.path, "error", err)
		}
	})
}

func (p *Policy) current() *policy { return p.cur.Load() }

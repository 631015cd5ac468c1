package cryptosvc

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	cryptov1 "github.com/auth-platform/tokenservice/proto/crypto/v1"
	"github.com/auth-platform/tokenservice/proto/crypto/v1/cryptov1connect"
	"github.com/auth-platform/tokenservice/signing"
)

// DefaultNamespace is the default Config.Namespace.
const DefaultNamespace = "tokenservice"

// namespaceRE is crypto.v1's rule for a namespace (see ValidNamespace).
var namespaceRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidNamespace reports whether ns is a namespace the crypto service
// accepts: 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter
// or digit.
func ValidNamespace(ns string) bool { return namespaceRE.MatchString(ns) }

// Config configures a Client. cmd/tokend fills it from its settings.
type Config struct {
	// Address is the service's base URL, https://host:port (a bare
	// host:port means https). Required. The service is reached over TLS
	// only.
	Address string
	// TLS configures the connection: RootCAs verifies the service (nil:
	// the system roots), Certificates or GetClientCertificate authenticate
	// this client (mTLS). Default: system roots, no client certificate.
	TLS *tls.Config
	// APIKey, if set, is sent as "Authorization: Bearer <key>" on every
	// call. String, GoString and LogValue print Config with it redacted.
	APIKey string
	// Namespace is where keys are made and looked up; it must be
	// ValidNamespace. Default DefaultNamespace.
	Namespace string
	// HTTPClient, if set, is used instead of the HTTP/2 client built from
	// TLS.
	HTTPClient connect.HTTPClient
	// Backoff retries GetPublicKey and CreateKey (signing.Retry) when
	// they fail with UNAVAILABLE or RESOURCE_EXHAUSTED, or the connection
	// was reset. Default signing.Backoff's.
	Backoff signing.Backoff
}

// String prints c with the API key redacted.
func (c Config) String() string {
	if c.APIKey != "" {
		c.APIKey = "[redacted]"
	}
	c.TLS, c.HTTPClient = nil, nil
	type plain Config // no String method: no recursion
	return fmt.Sprintf("%+v", plain(c))
}

// GoString prints c with the API key redacted, for %#v.
func (c Config) GoString() string { return c.String() }

// LogValue logs c with the API key redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("address", c.Address), slog.String("namespace", c.Namespace),
		slog.Bool("api_key", c.APIKey != ""), slog.Bool("client_certificate", c.TLS != nil && (len(c.TLS.Certificates) > 0 || c.TLS.GetClientCertificate != nil)))
}

// Client calls a crypto service. It is safe for concurrent use.
type Client struct {
	api     cryptov1connect.CryptoServiceClient
	ns      string
	backoff signing.Backoff
}

// New returns a client of the service cfg names. It does not connect:
// the first call does. It returns ErrConfig for an incomplete or invalid
// cfg.
func New(cfg Config) (*Client, error) {
	base, err := baseURL(cfg.Address)
	if err != nil {
		return nil, err
	}
	ns := cfg.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	if !ValidNamespace(ns) {
		return nil, fmt.Errorf("%w: namespace %q (want 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit)", ErrConfig, ns)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.TLS != nil {
			tc = cfg.TLS.Clone()
		}
		hc = &http.Client{Transport: &http.Transport{
			TLSClientConfig:     tc,
			ForceAttemptHTTP2:   true,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	// Messages are a few hundred bytes: no gzip (it would cost more CPU
	// than the bytes it saves).
	opts := []connect.ClientOption{connect.WithGRPC(), connect.WithAcceptCompression("gzip", nil, nil)}
	if cfg.APIKey != "" {
		opts = append(opts, connect.WithInterceptors(bearer(cfg.APIKey)))
	}
	return &Client{api: cryptov1connect.NewCryptoServiceClient(hc, base, opts...), ns: ns, backoff: cfg.Backoff}, nil
}

func baseURL(addr string) (string, error) {
	if addr == "" {
		return "", fmt.Errorf("%w: no address", ErrConfig)
	}
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("%w: address %q (want https://host:port)", ErrConfig, addr)
	}
	return "https://" + u.Host, nil
}

// bearer sends the API key on every call.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Namespace returns the namespace the client's keys live in.
func (c *Client) Namespace() string { return c.ns }

// Ref addresses a key's version in the service.
type Ref struct {
	Namespace, Name string
	Version         uint32
}

// String returns "namespace/name/version", the StoredKey.Ref of a key.
func (r Ref) String() string {
	return r.Namespace + "/" + r.Name + "/" + strconv.FormatUint(uint64(r.Version), 10)
}

// ParseRef parses what Ref.String returns; anything else is
// signing.ErrInvalidKey.
func ParseRef(s string) (Ref, error) {
	parts := strings.Split(s, "/")
	if len(parts) == 3 && parts[0] != "" && parts[1] != "" {
		if v, err := strconv.ParseUint(parts[2], 10, 32); err == nil && v > 0 {
			return Ref{Namespace: parts[0], Name: parts[1], Version: uint32(v)}, nil
		}
	}
	return Ref{}, fmt.Errorf("%w: crypto service reference %q", signing.ErrInvalidKey, s)
}

func (r Ref) proto() *cryptov1.KeyRef {
	return &cryptov1.KeyRef{Namespace: r.Namespace, Name: r.Name, Version: r.Version}
}

// callErr names op and key in err and maps the service's NOT_FOUND to
// ErrKeyNotFound.
func callErr(op string, r Ref, err error) error {
	if connect.CodeOf(err) == connect.CodeNotFound {
		return fmt.Errorf("%w: %s: %s: %v", ErrKeyNotFound, op, r, err)
	}
	return fmt.Errorf("cryptosvc: %s %s: %w", op, r, err)
}

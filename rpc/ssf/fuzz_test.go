package ssf

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// FuzzStreamRequest: any body a receiver sends either is refused with
// ErrInvalidRequest or gives a stream within the bounds, whose push URL
// is one checkPushURL accepts.
func FuzzStreamRequest(f *testing.F) {
	f.Add([]byte(`{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"https://rp.example/e"},"events_requested":["x"],"aud":"a"}`))
	f.Add([]byte(`{"delivery":{"method":"urn:ietf:rfc:8936"},"description":"d","aud":["a","b"]}`))
	f.Add([]byte(`{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"http://10.0.0.1/e"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req StreamRequest
		if json.Unmarshal(body, &req) != nil {
			return
		}
		for _, replace := range []bool{false, true} {
			r, err := PushURLPolicy{}.apply(record{Delivery: Delivery{Method: MethodPoll}}, req, Caller{Owner: "apikey:x"}, replace)
			if err != nil {
				if !errors.Is(err, ErrInvalidRequest) {
					t.Fatalf("error %v is not ErrInvalidRequest", err)
				}
				continue
			}
			if len(r.Aud) == 0 || len(r.Aud) > maxAudiences || len(r.EventsRequested) > maxEventTypes || len(r.Description) > maxDescription {
				t.Fatalf("out of bounds: %+v", r)
			}
			if r.Delivery.Method == MethodPush && (PushURLPolicy{}).checkPushURL(r.Delivery.EndpointURL) != nil {
				t.Fatalf("push URL %q accepted", r.Delivery.EndpointURL)
			}
			if r.Delivery.Method != MethodPush && r.Delivery.Method != MethodPoll {
				t.Fatalf("method %q", r.Delivery.Method)
			}
		}
	})
}

// FuzzSubject: a subject either is refused with ErrInvalidRequest or
// gives user and session keys.
func FuzzSubject(f *testing.F) {
	f.Add([]byte(`{"format":"iss_sub","iss":"https://i","sub":"u"}`))
	f.Add([]byte(`{"format":"complex","user":{"format":"iss_sub","iss":"https://i","sub":"u"},"session":{"format":"opaque","id":"s"}}`))
	f.Add([]byte(`{"format":"opaque","id":"s"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		keys, err := keysOf(body, "https://i")
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v is not ErrInvalidRequest", err)
			}
			return
		}
		if len(keys) == 0 || len(keys) > 2 {
			t.Fatalf("keys %v", keys)
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, "user:") && !strings.HasPrefix(k, "session:") {
				t.Fatalf("key %q", k)
			}
		}
	})
}

// TestPushURL: the rule of push URLs, case by case.
func TestPushURL(t *testing.T) {
	for _, tc := range []struct {
		url            string
		loopback, deny bool
		ok             bool
	}{
		{"https://rp.example/events", false, false, true},
		{"http://127.0.0.1:8080/e", true, false, true},
		{"http://localhost/e", true, false, true},
		{"http://[::1]/e", true, false, true},
		{"https://127.0.0.1:8080/e", true, false, true},
		{"http://127.0.0.1:8080/e", true, true, false},
		// Loopback only when the policy allows it (a sidecar's admin port).
		{"http://127.0.0.1:8080/e", false, false, false},
		{"https://127.0.0.1:15000/quitquitquit", false, false, false},
		{"https://localhost./e", false, false, false},
		{"https://[::1]/e", false, false, false},
		{"https://[::ffff:127.0.0.1]/e", false, false, false},
		{"http://rp.example/e", true, false, false},
		{"http://10.0.0.1/e", true, false, false},
		{"https://user:pw@rp.example/e", false, false, false},
		{"https://rp.example/e#frag", false, false, false},
		{"ftp://rp.example/e", false, false, false},
		{"https:opaque", false, false, false},
		{"//rp.example/e", false, false, false},
		{"", false, false, false},
		{"https://10.0.0.1/e", false, false, false},
		{"https://169.254.169.254/latest/meta-data", false, false, false},
		{"https://100.100.100.200/latest/meta-data", false, false, false},
		{"https://[64:ff9b::a9fe:a9fe]/e", false, false, false},
		{"https://[fd00::1]/e", false, false, false},
		{"https://0.0.0.0/e", false, false, false},
		{"https://93.184.215.14/e", false, false, true},
	} {
		err := PushURLPolicy{AllowLoopback: tc.loopback, DenyHTTPLoopback: tc.deny}.checkPushURL(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("%q (loopback %v, deny http loopback %v): %v, want ok=%v", tc.url, tc.loopback, tc.deny, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%q: %v is not ErrInvalidRequest", tc.url, err)
		}
	}
}

// TestJTIDeterministic: the jti depends on the stream and the record only.
func TestJTIDeterministic(t *testing.T) {
	a, b := jtiOf("s1", 7, ""), jtiOf("s1", 7, "")
	if a != b || !validID(a) {
		t.Fatalf("jti %q, %q", a, b)
	}
	if jtiOf("s2", 7, "") == a || jtiOf("s1", 8, "") == a || jtiOf("s1", 7, "n") == a {
		t.Fatal("jti collides across streams, records or nonces")
	}
}

// TestAllowedAddr: the addresses a push may connect to.
func TestAllowedAddr(t *testing.T) {
	for _, tc := range []struct {
		host, ip          string
		loopback, private bool
		ok                bool
	}{
		{"127.0.0.1", "127.0.0.1", true, false, true},
		{"localhost", "127.0.0.1", true, false, true},
		{"localhost", "::1", true, false, true},
		{"127.0.0.1", "127.0.0.1", false, false, false},
		{"localhost", "::1", false, false, false},
		{"127.0.0.1", "127.0.0.1", false, true, false},
		{"rebound.example", "127.0.0.1", true, false, false},
		{"rebound.example", "::ffff:127.0.0.1", true, false, false},
		{"rp.example", "10.1.2.3", false, false, false},
		{"rp.example", "10.1.2.3", false, true, true},
		{"rp.example", "100.100.100.200", false, false, false},
		{"rp.example", "100.100.100.200", false, true, true},
		{"rp.example", "169.254.169.254", false, false, false},
		{"rp.example", "fe80::1", false, false, false},
		{"rp.example", "0.0.0.0", false, true, false},
		{"rp.example", "224.0.0.1", false, true, false},
		{"rp.example", "64:ff9b::7f00:1", true, true, false},
		{"rp.example", "93.184.215.14", false, false, true},
		{"rp.example", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", false, false, true},
	} {
		p := PushURLPolicy{AllowLoopback: tc.loopback, AllowPrivate: tc.private}
		if got := p.allowedAddr(tc.host, netip.MustParseAddr(tc.ip)); got != tc.ok {
			t.Errorf("%s → %s (loopback %v, private %v): %v, want %v", tc.host, tc.ip, tc.loopback, tc.private, got, tc.ok)
		}
	}
}

// TestPublicAddr: the allow-list of addresses on the Internet, with the
// special-purpose ranges and the IPv4 carried by translation addresses.
func TestPublicAddr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, ip string
		ok       bool
	}{
		{"public v4", "93.184.215.14", true},
		{"public v6", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", true},
		{"loopback", "127.0.0.2", false},
		{"this network", "0.1.2.3", false},
		{"private", "172.16.0.1", false},
		{"cgnat", "100.64.0.1", false},
		{"alibaba metadata", "100.100.100.200", false},
		{"aws metadata", "169.254.169.254", false},
		{"ietf protocol", "192.0.0.170", false},
		{"test-net-1", "192.0.2.1", false},
		{"test-net-2", "198.51.100.1", false},
		{"test-net-3", "203.0.113.1", false},
		{"benchmarking", "198.19.0.1", false},
		{"6to4 relay", "192.88.99.1", false},
		{"reserved", "240.0.0.1", false},
		{"broadcast", "255.255.255.255", false},
		{"multicast", "239.1.1.1", false},
		{"mapped loopback", "::ffff:127.0.0.1", false},
		{"mapped public", "::ffff:93.184.215.14", true},
		{"compatible loopback", "::127.0.0.1", false},
		{"compatible metadata", "::169.254.169.254", false},
		{"nat64 metadata", "64:ff9b::a9fe:a9fe", false},
		{"nat64 loopback", "64:ff9b::127.0.0.1", false},
		{"nat64 public", "64:ff9b::93.184.215.14", true},
		{"nat64 local use", "64:ff9b:1::5db8:d70e", false},
		{"6to4 private", "2002:0a00:0001::1", false},
		{"6to4 loopback", "2002:7f00:0001::1", false},
		{"6to4 public", "2002:5db8:d70e::1", true},
		{"teredo client loopback", "2001:0:5db8:d70e::80ff:fffe", false},
		{"teredo server private", "2001:0:0a00:0001::a247:28f1", false},
		{"teredo public", "2001:0:5db8:d70e::a247:28f1", true},
		{"documentation v6", "2001:db8::1", false},
		{"documentation v6 3fff", "3fff::1", false},
		{"orchid", "2001:20::1", false},
		{"discard", "100::1", false},
		{"site-local", "fec0::1", false},
		{"unique local", "fd00::1", false},
		{"link-local v6", "fe80::1", false},
		{"unspecified", "::", false},
		{"loopback v6", "::1", false},
		{"multicast v6", "ff02::1", false},
	} {
		if got := publicAddr(netip.MustParseAddr(tc.ip)); got != tc.ok {
			t.Errorf("%s %s: %v, want %v", tc.name, tc.ip, got, tc.ok)
		}
	}
}

// TestDialerRefuses: the push client does not connect to a refused
// address, whatever the URL check said.
func TestDialerRefuses(t *testing.T) {
	dial := PushURLPolicy{}.dialer(time.Second)
	if _, err := dial(t.Context(), "tcp", "169.254.169.254:443"); !errors.Is(err, errAddressRefused) {
		t.Fatalf("dial of the metadata address: %v", err)
	}
	if _, err := dial(t.Context(), "tcp", "10.0.0.1:443"); !errors.Is(err, errAddressRefused) {
		t.Fatalf("dial of a private address: %v", err)
	}
	if _, err := dial(t.Context(), "tcp", "127.0.0.1:15000"); !errors.Is(err, errAddressRefused) {
		t.Fatalf("dial of loopback without AllowLoopback: %v", err)
	}
	if _, err := dial(t.Context(), "tcp", "[64:ff9b::a9fe:a9fe]:80"); !errors.Is(err, errAddressRefused) {
		t.Fatalf("dial of the metadata address through NAT64: %v", err)
	}
}

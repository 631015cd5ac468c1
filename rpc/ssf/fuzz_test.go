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
		url  string
		deny bool
		ok   bool
	}{
		{"https://rp.example/events", false, true},
		{"http://127.0.0.1:8080/e", false, true},
		{"http://localhost/e", false, true},
		{"http://[::1]/e", false, true},
		{"http://127.0.0.1:8080/e", true, false},
		{"http://rp.example/e", false, false},
		{"http://10.0.0.1/e", false, false},
		{"https://user:pw@rp.example/e", false, false},
		{"https://rp.example/e#frag", false, false},
		{"ftp://rp.example/e", false, false},
		{"https:opaque", false, false},
		{"//rp.example/e", false, false},
		{"", false, false},
		{"https://10.0.0.1/e", false, false},
		{"https://169.254.169.254/latest/meta-data", false, false},
		{"https://[fd00::1]/e", false, false},
		{"https://0.0.0.0/e", false, false},
		{"https://93.184.215.14/e", false, true},
	} {
		err := PushURLPolicy{DenyHTTPLoopback: tc.deny}.checkPushURL(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("%q (deny http loopback %v): %v, want ok=%v", tc.url, tc.deny, err, tc.ok)
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
		host, ip string
		private  bool
		ok       bool
	}{
		{"127.0.0.1", "127.0.0.1", false, true},
		{"localhost", "127.0.0.1", false, true},
		{"localhost", "::1", false, true},
		{"rebound.example", "127.0.0.1", false, false},
		{"rebound.example", "::ffff:127.0.0.1", false, false},
		{"rp.example", "10.1.2.3", false, false},
		{"rp.example", "10.1.2.3", true, true},
		{"rp.example", "169.254.169.254", false, false},
		{"rp.example", "fe80::1", false, false},
		{"rp.example", "0.0.0.0", true, false},
		{"rp.example", "224.0.0.1", true, false},
		{"rp.example", "93.184.215.14", false, true},
		{"rp.example", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", false, true},
	} {
		if got := (PushURLPolicy{AllowPrivate: tc.private}).allowedAddr(tc.host, netip.MustParseAddr(tc.ip)); got != tc.ok {
			t.Errorf("%s → %s (private %v): %v, want %v", tc.host, tc.ip, tc.private, got, tc.ok)
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
}

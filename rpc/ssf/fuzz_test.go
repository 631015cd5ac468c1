package ssf

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
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

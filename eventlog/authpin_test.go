package eventlog_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/eventlog"
)

// TestMACPinned pins the authenticator of fixed events to the values the
// first MAC code computed (and a separate Python computation of the
// documented input agreed): logs written by earlier releases must still
// verify, so the MAC input may be built differently but never change.
func TestMACPinned(t *testing.T) {
	t.Parallel()
	a, err := eventlog.NewAuthenticator([]byte("a fixed encryption key, 32 bytes"))
	if err != nil {
		t.Fatal(err)
	}
	full := nats.Header{}
	full.Set(eventlog.HeaderMsgID, "msg-1")
	full.Set(eventlog.HeaderEvent, "family.issued")
	full.Set(eventlog.HeaderCorrelationID, "corr-7")
	full.Set(eventlog.HeaderActor, "client:web")
	full.Set(eventlog.HeaderTTL, "3600s")
	full.Set(jetstream.ExpectedLastSubjSeqSubjHeader, "token.family.f1.>")
	bare := nats.Header{}
	bare.Set(jetstream.ExpectedLastSubjSeqSubjHeader, "token.key.>")
	payload := make([]byte, 300)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	big := make([]byte, 20000) // over the input buffer a pool keeps
	for i := range big {
		big[i] = byte(i*13 + 5)
	}
	tests := []struct {
		name    string
		subject string
		h       nats.Header
		data    []byte
		prev    uint64
		want    string
	}{
		{"every field", "token.family.f1.issued", full, payload, 0, "1.1abb2dce.0.27HuBkjgbDLYaggE-qLl2ZwdfiKCYnfuK48ZpfF4Rjo"},
		{"after a sequence", "token.family.f1.issued", full, []byte("g2"), 1<<40 + 3, "1.1abb2dce.1099511627779.0tiph7u2n3t7dY5MFsucAsm1eIkLzt0zbFGPTRVNesw"},
		{"empty fields and payload", "token.key.k1.generated", bare, nil, 7, "1.1abb2dce.7.l4ss8eGqwJoxG_iUsAiXwWHkNwaHV3JRI349r1O2dDI"},
		{"large payload", "token.key.k1.generated", bare, big, 7, "1.1abb2dce.7.9UCQmq3cJ3dMdls4_-e-CzTPIr7jk3BQFoc1LqMbgPQ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := a.Sign(tt.subject, tt.h, tt.data, tt.prev)
			if got != tt.want {
				t.Fatalf("Sign = %q, want %q", got, tt.want)
			}
			h := nats.Header{}
			for k, v := range tt.h {
				h[k] = v
			}
			h.Set(eventlog.HeaderAuth, got)
			if prev, err := a.Verify(tt.subject, 1, h, tt.data); err != nil || prev != tt.prev {
				t.Fatalf("Verify = %d, %v; want %d", prev, err, tt.prev)
			}
		})
	}
}

// TestMalformedAuthenticator: a Token-Auth value not of the form
// "1.<key id>.<prev>.<43 characters of base64url>" is forged.
func TestMalformedAuthenticator(t *testing.T) {
	t.Parallel()
	a, err := eventlog.NewAuthenticator([]byte("a fixed encryption key, 32 bytes"))
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	h.Set(jetstream.ExpectedLastSubjSeqSubjHeader, "token.key.>")
	good := a.Sign("token.key.k1.generated", h, []byte("x"), 7) // 1.<kid>.7.<mac>
	kid, mac := good[2:10], good[13:]
	for _, v := range []string{
		"", "1", "1.", "1." + kid, "1." + kid + ".7", "1." + kid + ".7." + mac + ".",
		"1." + kid + ".7." + mac + ".x", "2." + kid + ".7." + mac, "1." + kid + ".x." + mac,
		"1." + kid + ".-7." + mac, "1." + kid + ".7." + mac[1:], "1." + kid + ".7." + mac + "A",
		"1." + kid + ".7." + mac + "=", "1." + kid + ".7." + mac[:42] + "+", "1." + kid + "..7." + mac,
	} {
		h.Set(eventlog.HeaderAuth, v)
		if _, err := a.Verify("token.key.k1.generated", 1, h, []byte("x")); !errors.Is(err, eventlog.ErrForged) {
			t.Errorf("Token-Auth %q: %v, want ErrForged", v, err)
		}
	}
	h.Set(eventlog.HeaderAuth, good)
	if prev, err := a.Verify("token.key.k1.generated", 1, h, []byte("x")); err != nil || prev != 7 {
		t.Fatalf("Verify(%q) = %d, %v", good, prev, err)
	}
}

package issuer_test

import (
	"context"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
)

// BenchmarkLogMAC measures, side by side in one run, a GenerateTokens
// (sign, append on an embedded node, ES256) and the log authenticator's
// work for its event: the MAC made on append plus the MAC checked when a
// record is read back (a replica replays or reads it once). It reports the
// latter as a share of the former (target: under 2%).
func BenchmarkLogMAC(b *testing.B) {
	e := issuertest.New(b, issuertest.Options{})
	ctx := context.Background()
	req := issuer.GenerateRequest{Subject: "alice", ClientID: "web", Audience: []string{"api"}, Scopes: []string{"openid", "profile"}}
	tok, err := e.Issuer.Generate(ctx, req)
	if err != nil {
		b.Fatal(err)
	}
	stream, err := e.Log.JetStream().Stream(ctx, e.Log.Stream())
	if err != nil {
		b.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, e.Log.Subjects().FamilyFilter(tok.FamilyID))
	if err != nil {
		b.Fatal(err)
	}
	auth := eventlogtest.Auth(b)
	h := m.Header

	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := e.Issuer.Generate(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	generate := time.Since(start)
	start = time.Now()
	for range b.N {
		h.Set(eventlog.HeaderAuth, auth.Sign(m.Subject, h, m.Data, 0))
	}
	sign := time.Since(start)
	start = time.Now()
	for range b.N {
		if _, err := auth.Verify(m.Subject, m.Sequence, h, m.Data); err != nil {
			b.Fatal(err)
		}
	}
	verify := time.Since(start)
	b.ReportMetric(float64(generate.Nanoseconds())/float64(b.N), "generate-ns/op")
	b.ReportMetric(float64(sign.Nanoseconds())/float64(b.N), "sign-ns/op")
	b.ReportMetric(float64(verify.Nanoseconds())/float64(b.N), "verify-ns/op")
	b.ReportMetric(100*float64(sign+verify)/float64(generate), "mac-%-of-generate")
	b.ReportMetric(float64(len(m.Data)), "event-bytes")
}

// BenchmarkLastChain measures, side by side in one run, a raw direct get
// of a family's last event and Log.Last, which also checks its MAC and
// that it follows the aggregate's previous event (one more direct get):
// the read cost of the chain check on every Refresh, revocation and
// refresh-token introspection.
func BenchmarkLastChain(b *testing.B) {
	e := issuertest.New(b, issuertest.Options{})
	ctx := context.Background()
	tok, err := e.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: "alice", ClientID: "web", Audience: []string{"api"}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "web"}); err != nil {
		b.Fatal(err)
	}
	stream, err := e.Log.JetStream().Stream(ctx, e.Log.Stream())
	if err != nil {
		b.Fatal(err)
	}
	filter := e.Log.Subjects().FamilyFilter(tok.FamilyID)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := stream.GetLastMsgForSubject(ctx, filter); err != nil {
			b.Fatal(err)
		}
	}
	raw := time.Since(start)
	start = time.Now()
	for range b.N {
		if _, err := e.Log.Last(ctx, filter); err != nil {
			b.Fatal(err)
		}
	}
	checked := time.Since(start)
	b.ReportMetric(float64(raw.Nanoseconds())/float64(b.N), "raw-get-ns/op")
	b.ReportMetric(float64(checked.Nanoseconds())/float64(b.N), "last-checked-ns/op")
	b.ReportMetric(float64(checked)/float64(raw), "checked/raw")
}

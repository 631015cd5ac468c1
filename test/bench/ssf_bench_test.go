package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// BenchmarkSharedSignals measures the Shared Signals transmitter (issue
// 17) in one app (ES256, embedded NATS, production defaults otherwise):
//
//	latency/poll, latency/push  one family generated (untimed), then
//	    RevokeToken to the receiver holding its session-revoked SET: a
//	    long poll (RFC 8936) of a poll stream, or a local HTTP receiver of
//	    a push stream (RFC 8935). p50_ms, p99_ms over the b.N revocations.
//	generate/streams=0, generate/streams=10  GenerateTokens at c=16, as
//	    BenchmarkGenerateTokens, with no stream and then with 10 active
//	    streams (5 poll, 5 push, every event type requested), side by side
//	    in the same process: what the transmitter costs issuance.
func BenchmarkSharedSignals(b *testing.B) {
	port := eventlogtest.FreePorts(b, 1)[0]
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	m := startApp(b, map[string]string{
		"HOST": "127.0.0.1", "PORT": strconv.Itoa(port), "DATA_DIR": b.TempDir(), "NATS_LISTEN": "127.0.0.1:0",
		"LOG_LEVEL": "error", "ENCRYPTION_KEY": encryptionKey, "JWT_ALGORITHM": "ES256", "PUBLIC_BASE_URL": base,
	})
	s := &server{main: m, client: h2cClient(b, m.Addr())}
	hc := &http.Client{Timeout: 30 * time.Second}
	post := func(url string, body any, v any) {
		b.Helper()
		data, _ := json.Marshal(body)
		resp, err := hc.Post(url, "application/json", bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			b.Fatalf("POST %s: %d %s", url, resp.StatusCode, out)
		}
		if v != nil {
			if err := json.Unmarshal(out, v); err != nil {
				b.Fatal(err)
			}
		}
	}
	type stream struct {
		StreamID string `json:"stream_id"`
		Delivery struct {
			EndpointURL string `json:"endpoint_url"`
		} `json:"delivery"`
	}
	sessionRevoked := []string{"https://schemas.openid.net/secevent/caep/event-type/session-revoked"}
	pushed := make(chan string, 1<<16)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		pushed <- string(body)
	}))
	b.Cleanup(rcv.Close)
	ctx := context.Background()
	generateAndRevoke := func(n int, wait func(fid string)) time.Duration {
		tok, err := s.client.GenerateTokens(ctx, connect.NewRequest(generateRequest(n)))
		if err != nil {
			b.Fatal(err)
		}
		fid := tok.Msg.GetFamilyId()
		t0 := time.Now()
		if _, err := s.client.RevokeToken(ctx, connect.NewRequest(&tokenv1.RevokeTokenRequest{Target: &tokenv1.RevokeTokenRequest_FamilyId{FamilyId: fid}})); err != nil {
			b.Fatal(err)
		}
		wait(fid)
		return time.Since(t0)
	}
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		b.ReportMetric(ms(percentile(lat, 0.50)), "p50_ms")
		b.ReportMetric(ms(percentile(lat, 0.99)), "p99_ms")
	}

	b.Run("latency/poll", func(b *testing.B) {
		var st stream
		post(base+"/ssf/streams", map[string]any{"events_requested": sessionRevoked}, &st)
		defer deleteStream(b, hc, base, st.StreamID)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			lat = append(lat, generateAndRevoke(i, func(fid string) {
				for {
					var resp struct {
						Sets map[string]string `json:"sets"`
					}
					post(st.Delivery.EndpointURL, map[string]any{"maxEvents": 10}, &resp)
					var acks []string
					found := false
					for jti, set := range resp.Sets {
						acks = append(acks, jti)
						found = found || strings.Contains(sessionOfSET(b, set), fid)
					}
					if len(acks) > 0 {
						post(st.Delivery.EndpointURL, map[string]any{"ack": acks, "maxEvents": 0}, nil)
					}
					if found {
						return
					}
				}
			}))
		}
		b.StopTimer()
		report(b, lat)
	})

	b.Run("latency/push", func(b *testing.B) {
		var st stream
		post(base+"/ssf/streams", map[string]any{"events_requested": sessionRevoked,
			"delivery": map[string]any{"method": "urn:ietf:rfc:8935", "endpoint_url": rcv.URL}}, &st)
		defer deleteStream(b, hc, base, st.StreamID)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			lat = append(lat, generateAndRevoke(i, func(fid string) {
				for set := range pushed {
					if sessionOfSET(b, set) == fid {
						return
					}
				}
			}))
		}
		b.StopTimer()
		report(b, lat)
	})

	gen := func(b *testing.B) {
		drive(b, s, 16, func(int) call {
			return func(ctx context.Context, n int) error {
				_, err := s.client.GenerateTokens(ctx, connect.NewRequest(generateRequest(n)))
				return err
			}
		})
	}
	b.Run("generate/streams=0", gen)
	var ids []string
	for i := range 10 {
		req := map[string]any{"events_requested": []string{
			"https://schemas.openid.net/secevent/caep/event-type/session-revoked",
			"https://schemas.openid.net/secevent/risc/event-type/sessions-revoked",
		}}
		if i%2 == 1 {
			req["delivery"] = map[string]any{"method": "urn:ietf:rfc:8935", "endpoint_url": rcv.URL}
		}
		var st stream
		post(base+"/ssf/streams", req, &st)
		ids = append(ids, st.StreamID)
	}
	b.Run("generate/streams=10", gen)
	for _, id := range ids {
		deleteStream(b, hc, base, id)
	}
}

func deleteStream(b *testing.B, hc *http.Client, base, id string) {
	req, _ := http.NewRequest(http.MethodDelete, base+"/ssf/streams?stream_id="+id, nil)
	resp, err := hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
}

// sessionOfSET returns the session (family ID) a SET names, unverified:
// the benchmark measures delivery; the tests verify.
func sessionOfSET(b *testing.B, set string) string {
	parts := strings.Split(set, ".")
	if len(parts) != 3 {
		b.Fatalf("not a JWS: %q", set)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		b.Fatal(err)
	}
	var c struct {
		SubID struct {
			Session struct {
				ID string `json:"id"`
			} `json:"session"`
		} `json:"sub_id"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		b.Fatal(fmt.Errorf("SET payload: %w", err))
	}
	return c.SubID.Session.ID
}

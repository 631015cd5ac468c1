package bench

import (
	"context"
	"encoding/base64"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/signing"
)

const (
	tokenURL    = "https://as.example.com/token"
	resourceURL = "https://api.example.com/orders"
)

// BenchmarkDPoP measures, in one run:
//
//	raw_verify          ES256 signature verification of a DPoP proof on
//	                    GOMAXPROCS goroutines: the ceiling of ValidateDPoP.
//	ValidateDPoP/c=16   ValidateDPoP over Connect h2c by 16 workers, each
//	                    call a fresh ES256 proof (made before the timer)
//	                    with ath over a DPoP-bound access token: access-token
//	                    verification, every §4.3 check and the jti claim in
//	                    the log. x_raw_verify = ops/s / raw_verify ops/s
//	                    (target >= 0.5).
//	GenerateTokens/{bearer,dpop}/c=16
//	                    the same call without and with a DPoP proof; the
//	                    difference of cpu_us/op is what DPoP adds (proof
//	                    verification plus the jti append).
func BenchmarkDPoP(b *testing.B) {
	s := startServer(b, signing.ES256)
	key := dpoptest.NewKey(signing.ES256)
	ctx := context.Background()
	bound, err := s.client.GenerateTokens(ctx, connect.NewRequest(&tokenv1.GenerateTokensRequest{
		Subject: "bench-dpop", ClientId: clientID, Audience: audience, Scopes: scopes,
		DpopProof: key.Proof("POST", tokenURL, time.Now()), HttpMethod: "POST", HttpUri: tokenURL,
	}))
	if err != nil {
		b.Fatal(err)
	}
	at := bound.Msg.GetAccessToken()

	var rawRate float64
	b.Run("raw_verify", func(b *testing.B) {
		proof := key.Proof("GET", resourceURL, time.Now())
		input, sig := splitJWS(b, proof)
		pub := key.Signer.PublicJWK()
		pk, err := pub.PublicKey()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := signing.Verify(signing.ES256, pk, input, sig); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		rawRate = float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(rawRate, "ops/s")
	})

	b.Run("ValidateDPoP/c=16", func(b *testing.B) {
		proofs := makeProofs(key, b.N, func(i int) string {
			return key.Proof("GET", resourceURL, time.Now(), func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH(at) })
		})
		drive(b, &server{main: s.main, client: s.client}, 16, func(int) call {
			return func(ctx context.Context, n int) error {
				resp, err := s.client.ValidateDPoP(ctx, connect.NewRequest(&tokenv1.ValidateDPoPRequest{
					Proof: proofs[n], HttpMethod: "GET", HttpUri: resourceURL, AccessToken: at,
				}))
				if err != nil {
					return err
				}
				if !resp.Msg.GetValid() {
					return errors.New(resp.Msg.GetError() + ": " + resp.Msg.GetErrorDescription())
				}
				return nil
			}
		})
		if rawRate > 0 {
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/rawRate, "x_raw_verify")
		}
	})

	for _, mode := range []string{"bearer", "dpop"} {
		b.Run("GenerateTokens/"+mode+"/c=16", func(b *testing.B) {
			var proofs []string
			if mode == "dpop" {
				proofs = makeProofs(key, b.N, func(int) string { return key.Proof("POST", tokenURL, time.Now()) })
			}
			drive(b, &server{main: s.main, client: s.client}, 16, func(int) call {
				return func(ctx context.Context, n int) error {
					req := generateRequest(n)
					if proofs != nil {
						req.DpopProof, req.HttpMethod, req.HttpUri = proofs[n], "POST", tokenURL
					}
					resp, err := s.client.GenerateTokens(ctx, connect.NewRequest(req))
					if err != nil {
						return err
					}
					if want := map[bool]string{true: "DPoP", false: "Bearer"}[proofs != nil]; resp.Msg.GetTokenType() != want {
						return errors.New("token_type " + resp.Msg.GetTokenType())
					}
					return nil
				}
			})
		})
	}
}

// makeProofs makes n proofs on every core before the timer starts (each
// has a fresh jti: a proof is accepted once).
func makeProofs(_ dpoptest.Key, n int, mk func(i int) string) []string {
	out := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				out[i] = mk(i)
			}
		})
	}
	wg.Wait()
	return out
}

func splitJWS(tb testing.TB, jws string) (input, sig []byte) {
	tb.Helper()
	i := len(jws) - 1
	for i >= 0 && jws[i] != '.' {
		i--
	}
	s, err := decodeB64(jws[i+1:])
	if err != nil {
		tb.Fatal(err)
	}
	return []byte(jws[:i]), s
}

func decodeB64(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

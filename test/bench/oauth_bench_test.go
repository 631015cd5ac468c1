package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"connectrpc.com/connect"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
	"github.com/auth-platform/tokenservice/signing"
)

// BenchmarkOAuthRefresh: a refresh through the standard token endpoint
// (/oauth2/token, form-encoded, RFC 6749 §6) against RefreshTokens over
// Connect JSON, both on HTTP/1.1 at c=8, one server, side by side: the
// target is that the RFC endpoint costs no more (x_connect near or above
// 1 in the oauth run means as fast or faster). Each worker rotates its
// own family.
//
//	go test -run '^$' -bench 'OAuthRefresh' -benchtime 3s -count 3 ./test/bench/
func BenchmarkOAuthRefresh(b *testing.B) {
	s := startServer(b, signing.ES256)
	base := "http://" + s.main.Addr()
	h1 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	connectJSON := tokenv1connect.NewTokenServiceClient(h1, base, connect.WithProtoJSON())
	const conc = 8
	family := func(w int) string {
		resp, err := s.client.GenerateTokens(context.Background(), connect.NewRequest(generateRequest(2_000_000_000+w)))
		if err != nil {
			b.Fatalf("generate family of worker %d: %v", w, err)
		}
		return resp.Msg.GetRefreshToken()
	}
	var connectRate float64
	b.Run("transport=connect-json", func(b *testing.B) {
		drive(b, s, conc, func(w int) call {
			current := family(w)
			return func(ctx context.Context, _ int) error {
				resp, err := connectJSON.RefreshTokens(ctx, connect.NewRequest(&tokenv1.RefreshTokensRequest{RefreshToken: current, ClientId: clientID}))
				if err != nil {
					return err
				}
				current = resp.Msg.GetRefreshToken()
				return nil
			}
		})
		connectRate = float64(b.N) / b.Elapsed().Seconds()
	})
	b.Run("transport=oauth-form", func(b *testing.B) {
		drive(b, s, conc, func(w int) call {
			current := family(w)
			return func(ctx context.Context, _ int) error {
				form := url.Values{"grant_type": {"refresh_token"}, "client_id": {clientID}, "refresh_token": {current}}
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/oauth2/token", strings.NewReader(form.Encode()))
				if err != nil {
					return err
				}
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := h1.Do(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					return err
				}
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("token endpoint: %s %s", resp.Status, body)
				}
				var t struct {
					RefreshToken string `json:"refresh_token"`
				}
				if err := json.Unmarshal(body, &t); err != nil || t.RefreshToken == "" {
					return errors.New("no refresh_token in the answer")
				}
				current = t.RefreshToken
				return nil
			}
		})
		if connectRate > 0 {
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/connectRate, "x_connect")
		}
	})
}

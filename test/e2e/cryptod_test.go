//go:build cgo

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/auth-platform/tokenservice/cmd/cryptod/cryptodtest"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
)

// cryptodBinary builds cmd/cryptod once per test run.
func cryptodBinary(t *testing.T) string { return goBinary(t, "./cmd/cryptod", "cryptod") }

// startCryptod starts a cryptod child serving the fixture's SoftHSM2
// token on listen and waits until it answers.
func startCryptod(t *testing.T, f *cryptodtest.Fixture, listen string) *child {
	t.Helper()
	c := startProcess(t, cryptodBinary(t), nil, f.Environ(listen))
	hc := f.HTTPClient(t, "", "")
	hc.Timeout = time.Second
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get("https://" + listen + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		if !c.running() || time.Now().After(deadline) {
			t.Fatalf("cryptod pid %d not serving (%v):\n%s", c.pid, err, c.logTail(8<<10))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// issued is one acknowledged GenerateTokens response.
type issued struct {
	at     time.Time
	access string
}

// TestCryptodKilledUnderLoad: tokend signs with cmd/cryptod (SoftHSM2,
// mTLS) and seals with its envelope. tokend is restarted once first, so
// its fallback key must be unsealed through the service at start. Then,
// under a load of GenerateTokens calls, cryptod is SIGKILLed: the breaker
// opens, the pre-published fallback key signs (shorter lifetime), no call
// fails, and a fallback_engaged event is recorded. cryptod is started
// again on the same token and address, frozen while the breaker's trial
// call is out (calls meanwhile are refused and signed with the fallback
// key), then let go, and signing returns to it. Every
// token verifies against the served JWKS, every acknowledged family is in
// the stream, and the breaker, fallback and latency metrics show the
// outage.
func TestCryptodKilledUnderLoad(t *testing.T) {
	f := cryptodtest.New(t)
	listen := fmt.Sprintf("127.0.0.1:%d", eventlogtest.FreePorts(t, 1)[0])
	cryptod := startCryptod(t, f, listen)
	env := newChildEnv(t, map[string]string{
		"KMS_PROVIDER": "cryptosvc", "JWT_ALGORITHM": "ES256", "CRYPTO_SERVICE_ADDRESS": "https://" + listen,
		"CRYPTO_SERVICE_CA_FILE": f.CAFile, "CRYPTO_SERVICE_CERT_FILE": f.ClientCert, "CRYPTO_SERVICE_KEY_FILE": f.ClientKey,
		"CRYPTO_ENCRYPTION_ENABLED": "true", "CRYPTO_TIMEOUT": "1s",
	})
	tokend := startChild(t, env)
	tokend.waitReady(env.baseURL(), 60*time.Second)
	// A restart: the fallback key, sealed with a data key of the service,
	// is unsealed now, while the service answers.
	tokend.stop(30 * time.Second)
	tokend = startChild(t, env)
	tokend.waitReady(env.baseURL(), 60*time.Second)

	hc := http1Client()
	rpc := tokenClient(hc, env.baseURL())
	keys, _, _ := fetchJWKS(t, hc, env.baseURL())
	first, err := generate(context.Background(), rpc, &tokenv1.GenerateTokensRequest{Subject: "before", ClientId: "web", Audience: []string{"api://e2e"}})
	if err != nil {
		t.Fatal(err)
	}
	primary := kidOf(t, keys, first.AccessToken)
	var fallback string
	for _, k := range keys.Keys {
		if k.KeyID != primary {
			fallback = k.KeyID
		}
	}
	if len(keys.Keys) != 2 || fallback == "" {
		t.Fatalf("JWKS of %d keys, want the crypto service's key and the fallback key", len(keys.Keys))
	}

	// Load: 4 callers, each with one call in flight, paced at ~100/s each.
	led := newLedger()
	var mu sync.Mutex
	var tokens []issued
	var failed atomic.Int64
	var lastErr atomic.Value
	loadCtx, stopLoad := context.WithTimeout(context.Background(), 90*time.Second)
	defer stopLoad()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; loadCtx.Err() == nil; i++ {
				resp, err := generate(loadCtx, rpc, &tokenv1.GenerateTokensRequest{
					Subject: fmt.Sprintf("user-%d-%d", w, i), ClientId: "web", Audience: []string{"api://e2e"}})
				if err != nil {
					if loadCtx.Err() == nil {
						failed.Add(1)
						lastErr.Store(err)
					}
					continue
				}
				led.ack(resp.FamilyId, "web", resp.RefreshToken, 0)
				mu.Lock()
				tokens = append(tokens, issued{at: time.Now(), access: resp.AccessToken})
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(tokens) }
	lastKid := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(tokens) == 0 {
			return ""
		}
		return kidOf(t, keys, tokens[len(tokens)-1].access)
	}
	waitFor := func(what string, d time.Duration, ok func() bool) time.Duration {
		start := time.Now()
		for !ok() {
			if time.Since(start) > d {
				stopLoad()
				wg.Wait()
				t.Fatalf("%s: not within %s", what, d)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitFor("load", 10*time.Second, func() bool { return count() >= 50 })

	killedAt := time.Now()
	cryptod.kill()
	toFallback := waitFor("signing moves to the fallback key", 20*time.Second, func() bool { return lastKid() == fallback })
	waitFor("the breaker opens", 10*time.Second, func() bool { return gauge(t, hc, env.baseURL(), "token_service_crypto_circuit_breaker_open") == 1 })
	time.Sleep(time.Second) // load while the breaker is open
	duringOutage := count()

	// Every OPEN_FOR (10 s) the breaker lets one trial call through; a call
	// that comes while the trial is out is refused ("rejected") and signed
	// with the fallback key. That overlap is made certain, not left to
	// timing: cryptod comes back frozen (SIGSTOP) about 9 s before the
	// next trial, which then waits out CRYPTO_TIMEOUT while the load goes
	// on, and is let go once a refusal is counted.
	rejected := func() float64 {
		return value(scrape(t, hc, env.baseURL()), "token_service_crypto_operations_total", map[string]string{"operation": "sign", "status": "rejected"})
	}
	rejectedBefore := rejected()
	restartedAt := time.Now()
	restarted := startCryptod(t, f, listen) // stopped by the test's cleanup
	restarted.signal(syscall.SIGSTOP)
	waitFor("a call refused while the trial call is out", 30*time.Second, func() bool { return rejected() > rejectedBefore })
	restarted.signal(syscall.SIGCONT)
	back := waitFor("signing returns to the crypto service", 40*time.Second, func() bool { return lastKid() == primary })
	time.Sleep(500 * time.Millisecond)
	stopLoad()
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d token requests failed during the outage (last: %v)", n, lastErr.Load())
	}

	// Every token verifies against the JWKS served now; the fallback
	// key's tokens live FALLBACK_ACCESS_TOKEN_TTL (300 s).
	keys, _, _ = fetchJWKS(t, hc, env.baseURL())
	byKid := map[string]int{}
	var before, during, after int
	for _, tok := range tokens {
		v, err := verifyAccessToken(keys, tok.access, jose.ES256)
		if err != nil {
			t.Fatalf("a token does not verify against the JWKS: %v", err)
		}
		byKid[v.Header.KeyID]++
		switch {
		case tok.at.Before(killedAt):
			before++
			if v.Header.KeyID != primary {
				t.Fatalf("a token before the outage was signed by %s", v.Header.KeyID)
			}
		case tok.at.Before(restartedAt):
			during++
		default:
			after++
		}
		if v.Header.KeyID == fallback && v.Claims.Exp-v.Claims.Iat > 300 {
			t.Fatalf("a fallback token lives %d s", v.Claims.Exp-v.Claims.Iat)
		}
	}
	if byKid[fallback] == 0 || byKid[primary] == 0 || lastKid() != primary {
		t.Fatalf("tokens by key %v: want both keys, the crypto service's last", byKid)
	}

	// Nothing acknowledged is lost.
	d := checkDurability(t, led.snapshot(), readFamilies(t, env.natsURL()))
	if d.Families != len(tokens) {
		t.Fatalf("%d families checked, %d tokens acknowledged", d.Families, len(tokens))
	}

	// The outage is in the log and in the metrics.
	if !hasKeyEvent(t, env.natsURL(), fallback, "fallback_engaged") {
		t.Fatal("no fallback_engaged event for the fallback key")
	}
	m := scrape(t, hc, env.baseURL())
	sign := func(status string) float64 {
		return value(m, "token_service_crypto_operations_total", map[string]string{"operation": "sign", "status": status})
	}
	lat := m["token_service_crypto_latency_seconds"]
	var latCount uint64
	var latSum float64
	for _, mm := range lat.GetMetric() {
		if label(mm, "operation") == "sign" {
			latCount, latSum = mm.GetHistogram().GetSampleCount(), mm.GetHistogram().GetSampleSum()
		}
	}
	fb := value(m, "token_service_crypto_fallback_total", map[string]string{"operation": "sign"})
	checks := []struct {
		name string
		ok   bool
	}{
		{"breaker closed again", value(m, "token_service_crypto_circuit_breaker_open", nil) == 0},
		{"fallback signatures counted", fb >= float64(byKid[fallback])},
		{"failed calls counted", sign("error") > 0},
		{"calls refused while open counted", sign("rejected") > 0},
		{"calls signed by the service counted", sign("ok") >= float64(byKid[primary])},
		{"latency observed", latCount > 0},
		{"data keys unwrapped at the restart", value(m, "token_service_crypto_operations_total", map[string]string{"operation": "decrypt", "status": "ok"}) > 0},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("metrics: %s: no", c.name)
		}
	}
	t.Logf("tokens: %d before the kill, %d during the outage (%d by the end of the open breaker), %d after the restart; by key %v",
		before, during, duringOutage, after, byKid)
	t.Logf("signing moved to the fallback key %s after the kill, and back %s after cryptod restarted",
		toFallback.Round(time.Millisecond), back.Round(time.Millisecond))
	t.Logf("metrics: sign ok %.0f, error %.0f, rejected %.0f; fallback %.0f; mean sign latency %.2f ms over %d calls",
		sign("ok"), sign("error"), sign("rejected"), fb, 1000*latSum/float64(max(latCount, 1)), latCount)
}

// kidOf returns the kid of a token that verifies against keys.
func kidOf(t *testing.T, keys jose.JSONWebKeySet, token string) string {
	t.Helper()
	v, err := verifyAccessToken(keys, token, jose.ES256)
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	return v.Header.KeyID
}

func scrape(t *testing.T, hc *http.Client, baseURL string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := hc.Get(baseURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	m, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// value returns the counter or gauge of family name whose labels include
// labels.
func value(m map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	for _, mm := range m[name].GetMetric() {
		match := true
		for k, v := range labels {
			match = match && label(mm, k) == v
		}
		if match {
			if c := mm.GetCounter(); c != nil {
				return c.GetValue()
			}
			return mm.GetGauge().GetValue()
		}
	}
	return -1
}

func gauge(t *testing.T, hc *http.Client, baseURL, name string) float64 {
	return value(scrape(t, hc, baseURL), name, nil)
}

// hasKeyEvent reports whether the stream holds token.key.<kid>.<event>.
func hasKeyEvent(t *testing.T, natsURL, kid, event string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := nats.Connect(natsURL, serviceNkey(t), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, streamName)
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.GetLastMsgForSubject(ctx, strings.Join([]string{subjectPrefix, "key", kid, event}, "."))
	return err == nil
}

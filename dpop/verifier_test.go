package dpop_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/signing"
)

const (
	htm = "POST"
	htu = "https://as.example.com/token"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	v      *dpop.Verifier
	clock  *issuertest.Clock
	nonces *dpop.Nonces
	log    *eventlog.Log
}

func newFixture(t testing.TB, required bool) *fixture {
	t.Helper()
	node := eventlogtest.SingleNode(t)
	log := eventlogtest.OpenLog(t, node.Conn, eventlog.Config{})
	clock := issuertest.NewClock(t0)
	nonces, err := dpop.NewNonces(issuertest.TestKey, time.Minute, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := dpop.NewVerifier(dpop.Config{Algorithms: signing.Algorithms, Now: clock.Now, Nonces: nonces, NonceRequired: required,
		Replay: dpop.LogReplayStore{Log: log, Now: clock.Now}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{v: v, clock: clock, nonces: nonces, log: log}
}

// TestVerifyEveryAlgorithm: the success path for every allowed algorithm.
func TestVerifyEveryAlgorithm(t *testing.T) {
	f := newFixture(t, false)
	for _, alg := range signing.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			k := dpoptest.NewKey(alg)
			p, err := f.v.Verify(context.Background(), k.Proof(htm, htu, t0), dpop.Request{Method: htm, URI: htu})
			if err != nil {
				t.Fatal(err)
			}
			if p.JKT != k.JKT() {
				t.Fatalf("jkt %s, want %s", p.JKT, k.JKT())
			}
		})
	}
}

// TestVerifyChecks: each check of RFC 9449 §4.3 fails with its own
// sentinel error.
func TestVerifyChecks(t *testing.T) {
	f := newFixture(t, false)
	k := dpoptest.NewKey(signing.ES256)
	other := dpoptest.NewKey(signing.ES256)
	rsa := dpoptest.NewKey(signing.RS256)
	const at = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
	mod := func(m func(*dpoptest.Parts)) string { return k.Proof(htm, htu, t0, m) }
	hmac := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"jti": "x", "htm": htm, "htu": htu, "iat": t0.Unix()})
		tok.Header["typ"] = "dpop+jwt"
		tok.Header["jwk"] = k.PublicJWK()
		s, _ := tok.SignedString([]byte("0123456789abcdef0123456789abcdef"))
		return s
	}
	none := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"jti": "x", "htm": htm, "htu": htu, "iat": t0.Unix()})
		tok.Header["typ"] = "dpop+jwt"
		tok.Header["jwk"] = k.PublicJWK()
		s, _ := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		return s
	}
	valid := k.Proof(htm, htu, t0)
	tests := []struct {
		name    string
		proof   string
		req     dpop.Request
		wantErr error
	}{
		{"missing", "", dpop.Request{Method: htm, URI: htu}, dpop.ErrMissing},
		{"too large", valid + strings.Repeat("A", 9000), dpop.Request{Method: htm, URI: htu}, dpop.ErrTooLarge},
		{"not a JWS", "abc", dpop.Request{Method: htm, URI: htu}, dpop.ErrMalformed},
		{"two proofs joined", valid + "," + valid, dpop.Request{Method: htm, URI: htu}, dpop.ErrMalformed},
		{"garbage segments", "a.b.c", dpop.Request{Method: htm, URI: htu}, dpop.ErrMalformed},
		{"typ JWT", mod(func(p *dpoptest.Parts) { p.Header["typ"] = "JWT" }), dpop.Request{Method: htm, URI: htu}, dpop.ErrType},
		{"typ missing", mod(func(p *dpoptest.Parts) { delete(p.Header, "typ") }), dpop.Request{Method: htm, URI: htu}, dpop.ErrType},
		{"alg none", none(), dpop.Request{Method: htm, URI: htu}, dpop.ErrAlgorithm},
		{"alg HS256", hmac(), dpop.Request{Method: htm, URI: htu}, dpop.ErrAlgorithm},
		{"alg mismatching the key", mod(func(p *dpoptest.Parts) { p.Header["alg"] = "ES384" }), dpop.Request{Method: htm, URI: htu}, dpop.ErrJWK},
		{"jwk missing", mod(func(p *dpoptest.Parts) { delete(p.Header, "jwk") }), dpop.Request{Method: htm, URI: htu}, dpop.ErrJWK},
		{"jwk of RSA for ES256", mod(func(p *dpoptest.Parts) { p.Header["jwk"] = rsa.PublicJWK() }), dpop.Request{Method: htm, URI: htu}, dpop.ErrJWK},
		{"jwk with private member", mod(func(p *dpoptest.Parts) {
			j := k.PublicJWK()
			j["d"] = "AAAA"
			p.Header["jwk"] = j
		}), dpop.Request{Method: htm, URI: htu}, dpop.ErrPrivateKey},
		{"signature of another key", mod(func(p *dpoptest.Parts) { p.Header["jwk"] = other.PublicJWK() }), dpop.Request{Method: htm, URI: htu}, dpop.ErrSignature},
		{"signature tampered", valid[:len(valid)-3] + "AAA", dpop.Request{Method: htm, URI: htu}, dpop.ErrSignature},
		{"jti missing", mod(func(p *dpoptest.Parts) { delete(p.Claims, "jti") }), dpop.Request{Method: htm, URI: htu}, dpop.ErrMissingClaim},
		{"htm missing", mod(func(p *dpoptest.Parts) { delete(p.Claims, "htm") }), dpop.Request{Method: htm, URI: htu}, dpop.ErrMissingClaim},
		{"iat not a number", mod(func(p *dpoptest.Parts) { p.Claims["iat"] = "yesterday" }), dpop.Request{Method: htm, URI: htu}, dpop.ErrMalformed},
		{"htm other", mod(func(p *dpoptest.Parts) { p.Claims["htm"] = "GET" }), dpop.Request{Method: htm, URI: htu}, dpop.ErrMethod},
		{"htm lower case", mod(func(p *dpoptest.Parts) { p.Claims["htm"] = "post" }), dpop.Request{Method: htm, URI: htu}, dpop.ErrMethod},
		{"htu other path", mod(func(p *dpoptest.Parts) { p.Claims["htu"] = "https://as.example.com/other" }), dpop.Request{Method: htm, URI: htu}, dpop.ErrURI},
		{"htu other host", mod(func(p *dpoptest.Parts) { p.Claims["htu"] = "https://evil.example.com/token" }), dpop.Request{Method: htm, URI: htu}, dpop.ErrURI},
		{"htu http for https", mod(func(p *dpoptest.Parts) { p.Claims["htu"] = "http://as.example.com/token" }), dpop.Request{Method: htm, URI: htu}, dpop.ErrURI},
		{"htu relative", mod(func(p *dpoptest.Parts) { p.Claims["htu"] = "/token" }), dpop.Request{Method: htm, URI: htu}, dpop.ErrURI},
		{"iat too old", mod(func(p *dpoptest.Parts) { p.Claims["iat"] = t0.Add(-61 * time.Second).Unix() }), dpop.Request{Method: htm, URI: htu}, dpop.ErrIssuedTooEarly},
		{"iat in the future", mod(func(p *dpoptest.Parts) { p.Claims["iat"] = t0.Add(6 * time.Second).Unix() }), dpop.Request{Method: htm, URI: htu}, dpop.ErrIssuedInFuture},
		{"ath missing", valid, dpop.Request{Method: htm, URI: htu, AccessToken: at}, dpop.ErrAccessTokenHash},
		{"ath of another token", mod(func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH(at + "x") }), dpop.Request{Method: htm, URI: htu, AccessToken: at}, dpop.ErrAccessTokenHash},
		{"nonce stale", mod(func(p *dpoptest.Parts) { p.Claims["nonce"] = "AAAAAAAAAAAAAAAAAAAAAA" }), dpop.Request{Method: htm, URI: htu}, dpop.ErrNonceStale},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := lastSeq(t, f.log)
			_, err := f.v.Verify(context.Background(), tc.proof, tc.req)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if code := dpop.Code(err); code == "" {
				t.Fatalf("%v has no OAuth code", err)
			}
			if after := lastSeq(t, f.log); after != before {
				t.Fatal("a refused proof claimed its jti")
			}
		})
	}
	// The edges that pass: 60 s old, 5 s ahead, ath right, nonce fresh.
	for name, proof := range map[string]string{
		"iat at the skew":  mod(func(p *dpoptest.Parts) { p.Claims["iat"] = t0.Add(-60 * time.Second).Unix() }),
		"iat 5s ahead":     mod(func(p *dpoptest.Parts) { p.Claims["iat"] = t0.Add(5 * time.Second).Unix() }),
		"nonce current":    mod(func(p *dpoptest.Parts) { p.Claims["nonce"] = f.nonces.Current() }),
		"htu normalised":   mod(func(p *dpoptest.Parts) { p.Claims["htu"] = "HTTPS://AS.example.com:443/./token?x=1#f" }),
		"ath of the token": mod(func(p *dpoptest.Parts) { p.Claims["ath"] = dpoptest.ATH(at) }),
	} {
		t.Run("passes "+name, func(t *testing.T) {
			req := dpop.Request{Method: htm, URI: htu}
			if strings.HasPrefix(name, "ath") {
				req.AccessToken = at
			}
			if _, err := f.v.Verify(context.Background(), proof, req); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Replay: the same proof twice.
	p := k.Proof(htm, htu, t0)
	if _, err := f.v.Verify(context.Background(), p, dpop.Request{Method: htm, URI: htu}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.v.Verify(context.Background(), p, dpop.Request{Method: htm, URI: htu}); !errors.Is(err, dpop.ErrReplay) {
		t.Fatalf("replay: got %v, want ErrReplay", err)
	}
}

func TestNonces(t *testing.T) {
	f := newFixture(t, true)
	k := dpoptest.NewKey(signing.EdDSA)
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, k.Proof(htm, htu, t0), dpop.Request{Method: htm, URI: htu}); !errors.Is(err, dpop.ErrNonceMissing) || dpop.Code(err) != dpop.CodeUseNonce {
		t.Fatalf("no nonce while required: %v", err)
	}
	n := f.v.Nonce()
	withNonce := func(n string) string {
		return k.Proof(htm, htu, f.clock.Now(), func(p *dpoptest.Parts) { p.Claims["nonce"] = n })
	}
	if _, err := f.v.Verify(ctx, withNonce(n), dpop.Request{Method: htm, URI: htu}); err != nil {
		t.Fatal(err)
	}
	// One rotation later the nonce is still good; two later it is stale.
	f.clock.Advance(time.Minute)
	if _, err := f.v.Verify(ctx, withNonce(n), dpop.Request{Method: htm, URI: htu}); err != nil {
		t.Fatalf("nonce of the previous step: %v", err)
	}
	f.clock.Advance(time.Minute)
	if _, err := f.v.Verify(ctx, withNonce(n), dpop.Request{Method: htm, URI: htu}); !errors.Is(err, dpop.ErrNonceStale) {
		t.Fatalf("nonce two steps old: %v", err)
	}
	// Another replica with the same secret accepts the current nonce; a
	// replica with another secret does not.
	same, _ := dpop.NewNonces(issuertest.TestKey, time.Minute, f.clock.Now)
	otherKey, _ := dpop.NewNonces([]byte("another secret of at least 32 bytes!"), time.Minute, f.clock.Now)
	if !same.Valid(f.v.Nonce()) || otherKey.Valid(f.v.Nonce()) {
		t.Fatal("nonces are not shared exactly by the replicas that share the secret")
	}
	if f.v.Nonce() == n {
		t.Fatal("nonce did not rotate")
	}
}

func lastSeq(t *testing.T, l *eventlog.Log) uint64 {
	t.Helper()
	seq, err := l.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// TestNonceOfEachStep: the nonce handed out is the one of the clock's step,
// whichever step was asked for before (it is remembered per step), also
// when the clock goes back: two sources, one asked every step, the other
// only at the end, agree at every step.
func TestNonceOfEachStep(t *testing.T) {
	clock := issuertest.NewClock(time.Unix(1_800_000_000, 0))
	asked, _ := dpop.NewNonces(issuertest.TestKey, time.Minute, clock.Now)
	seen := map[string]bool{}
	for _, d := range []time.Duration{0, time.Second, time.Minute, 2 * time.Minute, -3 * time.Minute, 10 * time.Minute, -time.Minute} {
		clock.Advance(d)
		fresh, _ := dpop.NewNonces(issuertest.TestKey, time.Minute, clock.Now)
		if got, want := asked.Current(), fresh.Current(); got != want {
			t.Fatalf("after %v: nonce %q, want %q", d, got, want)
		}
		if !asked.Valid(fresh.Current()) {
			t.Fatalf("after %v: current nonce not valid", d)
		}
		seen[asked.Current()] = true
	}
	if len(seen) < 4 {
		t.Fatalf("%d distinct nonces over 6 steps", len(seen))
	}
}

package dpop_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/auth-platform/tokenservice/dpop"
	"github.com/auth-platform/tokenservice/dpop/dpoptest"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/signing"
)

// TestSingleFieldMutationRefused: take a valid proof and change one field
// of its header or claims, either re-signed with the proof key or left with
// the old signature, or change one byte of its signature. Every such proof
// is refused.
func TestSingleFieldMutationRefused(t *testing.T) {
	f := newFixture(t, false)
	keys := map[signing.Algorithm]dpoptest.Key{}
	for _, a := range signing.Algorithms {
		keys[a] = dpoptest.NewKey(a)
	}
	const at = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
	req := dpop.Request{Method: htm, URI: htu, AccessToken: at}
	rapid.Check(t, func(t *rapid.T) {
		alg := rapid.SampledFrom(signing.Algorithms).Draw(t, "alg")
		k := keys[alg]
		p := k.Parts(htm, htu, t0)
		p.Claims["ath"] = dpoptest.ATH(at)
		p.Claims["nonce"] = f.nonces.Current()
		field := rapid.SampledFrom([]string{"typ", "alg", "jwk", "jwk.x", "htm", "htu", "iat", "ath", "nonce", "jti", "signature"}).Draw(t, "field")
		resign := rapid.Bool().Draw(t, "resign")
		var proof string
		switch field {
		case "signature":
			proof = k.Sign(p)
			i := rapid.IntRange(strings.LastIndexByte(proof, '.')+1, len(proof)-1).Draw(t, "byte")
			c := proof[i]
			repl := byte('A')
			if c == 'A' {
				repl = 'B'
			}
			// The last base64url char of a signature may carry unused
			// bits; change a char whose value surely differs in them.
			if i == len(proof)-1 {
				repl = c ^ 0x20
				if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", rune(repl)) {
					t.Skip("last char without a case pair")
				}
			}
			proof = proof[:i] + string(repl) + proof[i+1:]
		case "jti":
			// Another jti is a new proof, so "mutating" it means reusing
			// one that was already accepted: claim it first.
			first := k.Sign(p)
			if _, err := f.v.Verify(context.Background(), first, req); err != nil {
				t.Fatalf("the unmutated proof was refused: %v", err)
			}
			proof = first
			if resign {
				proof = k.Sign(p) // same claims, new signature (ECDSA/PSS are randomized)
			}
		default:
			orig := k.Sign(p)
			mutate(t, &p, field, keys)
			if resign {
				proof = k.Sign(p)
			} else {
				mutated := k.Sign(p)
				proof = mutated[:strings.LastIndexByte(mutated, '.')] + orig[strings.LastIndexByte(orig, '.'):]
			}
		}
		if got, err := f.v.Verify(context.Background(), proof, req); err == nil {
			t.Fatalf("mutated %s (resigned %v) accepted: %+v", field, resign, got)
		}
	})
}

func mutate(t *rapid.T, p *dpoptest.Parts, field string, keys map[signing.Algorithm]dpoptest.Key) {
	switch field {
	case "typ":
		p.Header["typ"] = rapid.SampledFrom([]string{"JWT", "at+jwt", "dpop+JWT", ""}).Draw(t, "typ")
	case "alg":
		cur := p.Header["alg"]
		p.Header["alg"] = rapid.SampledFrom([]string{"none", "HS256", "RS512", "ES256K"}).Filter(func(s string) bool { return s != cur }).Draw(t, "newalg")
	case "jwk":
		a := rapid.SampledFrom(signing.Algorithms).Draw(t, "otherkey")
		p.Header["jwk"] = keys[a].PublicJWK()
		if fmt.Sprint(p.Header["jwk"]) == fmt.Sprint(keys[signing.Algorithm(p.Header["alg"].(string))].PublicJWK()) {
			p.Header["jwk"] = dpoptest.NewKey(a).PublicJWK()
		}
	case "jwk.x":
		j := p.Header["jwk"].(map[string]any)
		m := map[string]any{}
		for k, v := range j {
			m[k] = v
		}
		if _, ok := m["x"]; ok {
			m["x"] = "A" + m["x"].(string)[1:]
			if m["x"] == j["x"] {
				m["x"] = "B" + m["x"].(string)[1:]
			}
		} else {
			m["e"] = "AQAA"
		}
		p.Header["jwk"] = m
	case "htm":
		p.Claims["htm"] = rapid.SampledFrom([]string{"GET", "PUT", "post", "POST "}).Draw(t, "htm")
	case "htu":
		p.Claims["htu"] = rapid.SampledFrom([]string{"https://as.example.com/token2", "https://as.example.org/token", "http://as.example.com/token", "https://as.example.com:8443/token"}).Draw(t, "htu")
	case "iat":
		d := rapid.SampledFrom([]time.Duration{-61 * time.Second, -time.Hour, 6 * time.Second, time.Hour}).Draw(t, "iat")
		p.Claims["iat"] = t0.Add(d).Unix()
	case "ath":
		p.Claims["ath"] = dpoptest.ATH("another token")
	case "nonce":
		p.Claims["nonce"] = rapid.SampledFrom([]string{"AAAAAAAAAAAAAAAAAAAAAA", "", "x"}).Draw(t, "nonce")
		if p.Claims["nonce"] == "" {
			p.Claims["nonce"] = "stale-nonce-of-22-char"
		}
	}
}

// TestReplayAcrossCluster: one proof reaches three replicas, each on its
// own node of a 3-node cluster with an R3 stream, at the same moment: it
// is valid exactly once.
func TestReplayAcrossCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster in -short")
	}
	nodes := eventlogtest.Cluster(t, 3)
	var vs []*dpop.Verifier
	for _, nd := range nodes {
		log := eventlogtest.OpenLog(t, nd.Conn, eventlog.Config{Replicas: 3})
		v, err := dpop.NewVerifier(dpop.Config{Algorithms: signing.Algorithms, Replay: dpop.LogReplayStore{Log: log}})
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	k := dpoptest.NewKey(signing.ES256)
	for round := range 20 {
		proof := k.Proof(htm, htu, time.Now())
		var wg sync.WaitGroup
		results := make([]error, len(vs)*2)
		start := make(chan struct{})
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, results[i] = vs[i%len(vs)].Verify(context.Background(), proof, dpop.Request{Method: htm, URI: htu})
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for _, err := range results {
			switch {
			case err == nil:
				ok++
			case err != dpop.ErrReplay:
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: proof accepted %d times across 3 replicas, want exactly once", round, ok)
		}
	}
}

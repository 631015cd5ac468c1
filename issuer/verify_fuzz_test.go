package issuer_test

import (
	"context"
	"strings"
	"testing"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
)

// FuzzVerifyAccessToken feeds arbitrary strings to the access-token
// verifier: it never panics, and the only strings it accepts are tokens
// the issuer really issued (signatures cannot be forged by mutation).
func FuzzVerifyAccessToken(f *testing.F) {
	env := issuertest.New(f, issuertest.Options{})
	issued := map[string]bool{}
	for _, sub := range []string{"alice", "bob"} {
		tok, err := env.Issuer.Generate(context.Background(), issuer.GenerateRequest{Subject: sub, ClientID: "web", Audience: []string{"api"}})
		if err != nil {
			f.Fatal(err)
		}
		issued[tok.AccessToken] = true
		f.Add(tok.AccessToken)
		parts := strings.Split(tok.AccessToken, ".")
		f.Add(parts[0] + "." + parts[1] + ".")                             // no signature
		f.Add("eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0." + parts[1] + ".") // alg none
		f.Add(parts[0] + "." + parts[1] + "x." + parts[2])
	}
	f.Add("")
	f.Add("...")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := env.Issuer.VerifyAccessToken(s, false)
		if err == nil && !issued[s] {
			t.Fatalf("accepted a token that was never issued: %q (%+v)", s, v)
		}
	})
}

package rpc_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"pgregory.net/rapid"

	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/rpc/refusal"
)

// TestRefusalProperties (the specification's error-handling property
// suite): for any error of the table's sentinels, wrapped any number of
// times with text that holds a secret, or for any error the table does not
// know, the client reads exactly one Connect code and one OAuth code (the
// first rule that matches), a message made of them and the rule's public
// text, and never the secret; the server side still finds the sentinel.
func TestRefusalProperties(t *testing.T) {
	table := rpc.Refusals()
	var sentinels []error
	for _, r := range table {
		if r.Err != nil {
			sentinels = append(sentinels, r.Err)
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		secret := "secret-" + rapid.StringMatching(`[a-z0-9]{12}`).Draw(t, "secret")
		var err, sentinel error
		if rapid.Bool().Draw(t, "known") {
			sentinel = rapid.SampledFrom(sentinels).Draw(t, "sentinel")
			err = sentinel
		} else {
			err = errors.New("driver: connection to 10.0.0.7 refused, " + secret)
		}
		for i := range rapid.IntRange(0, 3).Draw(t, "wraps") {
			err = fmt.Errorf("layer %d (%s): %w", i, secret, err)
		}
		rule := table.Rule(err)
		if sentinel != nil && !errors.Is(sentinel, rule.Err) {
			t.Fatalf("%v matched the rule of %v", sentinel, rule.Err)
		}
		if sentinel == nil && (rule.Code != connect.CodeInternal || rule.OAuth != refusal.ServerError || !rule.Log) {
			t.Fatalf("an unknown error is refused as %v/%s, want internal/server_error, logged", rule.Code, rule.OAuth)
		}
		ce := rule.Error(err)
		if ce.Code() != rule.Code {
			t.Fatalf("code %v, rule %v", ce.Code(), rule.Code)
		}
		want := rule.OAuth
		if text := rule.Text(err); text != "" {
			want += ": " + text
		}
		if ce.Message() != want || !strings.HasPrefix(ce.Message(), rule.OAuth) {
			t.Fatalf("message %q, want %q", ce.Message(), want)
		}
		if strings.Contains(ce.Error(), secret) || strings.Contains(ce.Error(), "10.0.0.7") {
			t.Fatalf("the client reads the server's detail: %q", ce.Error())
		}
		for _, d := range ce.Details() {
			if strings.Contains(string(d.Bytes()), secret) {
				t.Fatalf("a detail holds the server's detail")
			}
		}
		if sentinel != nil && !errors.Is(ce, sentinel) {
			t.Fatal("the server side lost the sentinel")
		}
	})
}

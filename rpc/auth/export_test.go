package auth

import (
	"context"
	"net/http"
)

// AuthenticateKey authenticates an API key as a request's bearer
// credential would be.
func AuthenticateKey(g *Guard, key string) (Identity, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+key)
	return g.authenticate(context.Background(), h)
}

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// target is one server under load for one algorithm, with the wrk
// workloads it answers.
type target struct {
	name     string
	p        *proc
	base     string    // http://127.0.0.1:PORT
	generate workload  // a JWT access token for the client (client_credentials or GenerateTokens)
	refresh  *workload // a rotation of a refresh token; nil when not measured
	// seed returns n fresh refresh tokens for one refresh run.
	seed func(ctx context.Context, n int) ([]string, error)
}

// workload is a wrk request: a POST of body to url. In a refresh workload,
// body is a template whose %s is the current refresh token, and field is
// the JSON member of the response that holds its successor.
type workload struct {
	url, contentType, auth, body, field string
}

const (
	benchClient = "bench"
	nodeSecret  = "bench-secret-0123456789"
	hydraSecret = "bench-secret-0123456789"
)

func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

// tokendEnv is the environment of a tokend under load: embedded NATS with
// the default sync interval, local keys, no caller authentication (only
// allowed on loopback), warnings and errors logged.
func tokendEnv(port int, dataDir, alg string) []string {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	return []string{
		"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port), "DATA_DIR=" + dataDir,
		"NATS_LISTEN=127.0.0.1:0", "LOG_LEVEL=error", "ENCRYPTION_KEY=" + key,
		"JWT_ALGORITHM=" + alg,
	}
}

// startTokend starts the tokend binary bin (a build named name) for alg.
func (h *harness) startTokend(ctx context.Context, name, bin, alg string) (*target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(h.work, name+"-"+alg+"-")
	if err != nil {
		return nil, err
	}
	p, err := h.procs.start(name, dir, filepath.Join(dir, "log"), tokendEnv(port, filepath.Join(dir, "data"), alg), bin)
	if err != nil {
		return nil, err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if err := waitHTTP(ctx, p, base+"/readyz"); err != nil {
		return nil, err
	}
	rpc := base + "/token.v1.TokenService/"
	t := &target{
		name: name, p: p, base: base,
		generate: workload{url: rpc + "GenerateTokens", contentType: "application/json",
			body: `{"subject":"bench-user","clientId":"bench","audience":["api"],"scopes":["api"]}`},
		refresh: &workload{url: rpc + "RefreshTokens", contentType: "application/json",
			body: `{"refreshToken":"%s","clientId":"bench"}`, field: "refreshToken"},
	}
	t.seed = func(ctx context.Context, n int) ([]string, error) {
		out := make([]string, 0, n)
		for i := range n {
			body := fmt.Sprintf(`{"subject":"bench-refresh-%d","clientId":"bench","audience":["api"],"scopes":["api"]}`, i)
			m, err := postJSON(ctx, t.generate.url, "application/json", "", body)
			if err != nil {
				return nil, err
			}
			rt, _ := m["refreshToken"].(string)
			if rt == "" {
				return nil, errors.New("GenerateTokens returned no refresh token")
			}
			out = append(out, rt)
		}
		return out, nil
	}
	return t, checkToken(ctx, t.generate, "accessToken", alg)
}

// startNode starts node-oidc-provider (test/peers/node/server.mjs) for alg.
func (h *harness) startNode(ctx context.Context, alg string) (*target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(h.work, "node-"+alg+"-")
	if err != nil {
		return nil, err
	}
	p, err := h.procs.start("node-oidc-provider", h.nodeDir, filepath.Join(dir, "log"),
		[]string{"NODE_ENV=production"}, h.node, "server.mjs", strconv.Itoa(port), alg)
	if err != nil {
		return nil, err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if err := waitHTTP(ctx, p, base+"/.well-known/openid-configuration"); err != nil {
		return nil, err
	}
	auth := basic(benchClient, nodeSecret)
	form := "application/x-www-form-urlencoded"
	t := &target{
		name: "node-oidc-provider", p: p, base: base,
		generate: workload{url: base + "/token", contentType: form, auth: auth,
			body: "grant_type=client_credentials&scope=api"},
		refresh: &workload{url: base + "/token", contentType: form, auth: auth,
			body: "grant_type=refresh_token&refresh_token=%s", field: "refresh_token"},
	}
	t.seed = func(ctx context.Context, n int) ([]string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/bench/seed?n="+strconv.Itoa(n), nil)
		if err != nil {
			return nil, err
		}
		resp, b, err := send(req)
		if err != nil {
			return nil, err
		}
		tokens := strings.Fields(string(b))
		if resp.StatusCode != http.StatusOK || len(tokens) != n {
			return nil, fmt.Errorf("seed: %s, %d tokens, want %d", resp.Status, len(tokens), n)
		}
		return tokens, nil
	}
	return t, checkToken(ctx, t.generate, "access_token", alg)
}

// startHydra starts Ory Hydra (serve all --dev, in-memory SQLite, JWT
// access tokens) and registers the bench client; for ES256 it replaces the
// access-token key set with one ES256 key. Hydra hashes client secrets with
// PBKDF2, 25,000 iterations by default, on every client_credentials call;
// the variant hydra-pbkdf2-1 runs with one iteration, to show the rest.
func (h *harness) startHydra(ctx context.Context, name, alg string) (*target, error) {
	pub, err := freePort()
	if err != nil {
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(h.work, "hydra-"+alg+"-")
	if err != nil {
		return nil, err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(pub)
	adminURL := "http://127.0.0.1:" + strconv.Itoa(admin)
	env := []string{
		"DSN=memory", "SECRETS_SYSTEM=bench-system-secret-0123456789", "URLS_SELF_ISSUER=" + base,
		"STRATEGIES_ACCESS_TOKEN=jwt", "LOG_LEVEL=error",
		"SERVE_PUBLIC_HOST=127.0.0.1", "SERVE_PUBLIC_PORT=" + strconv.Itoa(pub),
		"SERVE_ADMIN_HOST=127.0.0.1", "SERVE_ADMIN_PORT=" + strconv.Itoa(admin),
	}
	if name == "hydra-pbkdf2-1" {
		env = append(env, "OAUTH2_HASHERS_PBKDF2_ITERATIONS=1")
	}
	p, err := h.procs.start(name, dir, filepath.Join(dir, "log"), env, h.hydra, "serve", "all", "--dev")
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, p, adminURL+"/health/ready"); err != nil {
		return nil, err
	}
	client := fmt.Sprintf(`{"client_id":%q,"client_secret":%q,"grant_types":["client_credentials"],`+
		`"token_endpoint_auth_method":"client_secret_basic","access_token_strategy":"jwt","scope":"api"}`,
		benchClient, hydraSecret)
	if _, err := postJSON(ctx, adminURL+"/admin/clients", "application/json", "", client); err != nil {
		return nil, fmt.Errorf("hydra client: %w", err)
	}
	if alg == "ES256" {
		set := adminURL + "/admin/keys/hydra.jwt.access-token"
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, set, nil)
		if resp, err := http.DefaultClient.Do(req); err != nil {
			return nil, err
		} else {
			resp.Body.Close()
		}
		if _, err := postJSON(ctx, set, "application/json", "", `{"alg":"ES256","use":"sig","kid":"bench-es256"}`); err != nil {
			return nil, fmt.Errorf("hydra ES256 key: %w", err)
		}
	}
	t := &target{name: name, p: p, generate: workload{url: base + "/oauth2/token",
		contentType: "application/x-www-form-urlencoded", auth: basic(benchClient, hydraSecret),
		body: "grant_type=client_credentials&scope=api"}}
	return t, checkToken(ctx, t.generate, "access_token", alg)
}

// checkToken sends w once and checks that the response's member field is
// a JWT signed with alg.
func checkToken(ctx context.Context, w workload, field, alg string) error {
	m, err := postJSON(ctx, w.url, w.contentType, w.auth, w.body)
	if err != nil {
		return err
	}
	at, _ := m[field].(string)
	parts := strings.Split(at, ".")
	if len(parts) != 3 {
		return fmt.Errorf("%s: %s is not a JWT: %v", w.url, field, m)
	}
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return err
	}
	var h struct{ Alg string }
	if err := json.Unmarshal(hdr, &h); err != nil {
		return err
	}
	if h.Alg != alg {
		return fmt.Errorf("%s: token signed with %s, want %s", w.url, h.Alg, alg)
	}
	return nil
}

// send does req and returns its response with the body read (at most
// 1 MiB) and closed.
func send(req *http.Request) (*http.Response, []byte, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, b, err
}

// postJSON POSTs body and decodes a 2xx JSON answer.
func postJSON(ctx context.Context, url, contentType, auth, body string) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, b, err := send(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("POST %s: %s: %s", url, resp.Status, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("POST %s: %w", url, err)
	}
	return m, nil
}

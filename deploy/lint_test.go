package deploy

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/auth-platform/tokenservice/cmd/tokend/app"
)

// manifestFiles are the files deploy/lint checks, relative to deploy/.
var manifestFiles = []string{"Dockerfile", "Dockerfile.dockerignore", "compose.yaml", "k8s/nats.yaml", "k8s/networkpolicy.yaml", "k8s/tokend.yaml", "nats-feed.json"}

// buildLint builds deploy/lint, a module of its own (its validators stay
// out of the service's go.mod), and returns the program's path.
func buildLint(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lint")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = "lint"
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build deploy/lint: %v\n%s", err, out)
	}
	return bin
}

// copyDeploy copies the manifests into a fresh tree laid out like the
// repository (go.mod at the root, the files under deploy/), as the compose
// build context is the module root, and returns the deploy directory.
func copyDeploy(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "deploy")
	for _, f := range append([]string{"../go.mod"}, manifestFiles...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, f)
		if f == "../go.mod" {
			dst = filepath.Join(root, "go.mod")
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestManifestsLint runs deploy/lint on the manifests (Kubernetes strict
// decoding, API server validation and Pod Security "restricted"; compose
// schema; BuildKit's Dockerfile lint; nats-server's config parser; the
// cross-references) and fails on any finding. Then it breaks a copy of the
// manifests in one place per case and checks that lint names the fault, so
// each validator is shown to run.
func TestManifestsLint(t *testing.T) {
	bin := buildLint(t)
	out, err := exec.Command(bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/lint: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("are clean")) {
		t.Fatalf("deploy/lint passed without saying what it checked:\n%s", out)
	}

	// The accounts of the compose NATS configuration run to the end of
	// the file.
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	composeAccounts := string(b[bytes.Index(b, []byte("      # No no_auth_user")):])

	for _, c := range []struct {
		name, file, old, new, want string
	}{
		{"k8s unknown field", "k8s/tokend.yaml", "readinessProbe:", "readinesProbe:",
			`strict decoding error: unknown field "spec.template.spec.containers[0].readinesProbe"`},
		{"k8s wrong type", "k8s/nats.yaml", "replicas: 3", `replicas: "3"`, "cannot unmarshal string"},
		{"k8s API server validation", "k8s/tokend.yaml", "maxSurge: 1", "maxSurge: -1",
			"API server validation: spec.strategy.rollingUpdate.maxSurge"},
		{"k8s API server validation of a Service", "k8s/tokend.yaml", "appProtocol: kubernetes.io/h2c", "protocol: HTTP",
			"API server validation: spec.ports[0].protocol"},
		{"k8s pod security", "k8s/tokend.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true",
			"Pod Security Standards (restricted): allowPrivilegeEscalation"},
		{"k8s probe port", "k8s/tokend.yaml", "path: /readyz\n              port: http", "path: /readyz\n              port: grpc",
			"readinessProbe port grpc is not one of the container's ports"},
		{"k8s service target port", "k8s/tokend.yaml", "targetPort: http", "targetPort: grpc",
			"targetPort grpc is not a container port of tokend"},
		{"k8s selector", "k8s/tokend.yaml", "spec:\n  minAvailable: 2\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: tokend",
			"spec:\n  minAvailable: 2\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: tokend-api", "selects no pod template"},
		{"k8s headless service", "k8s/nats.yaml", "  clusterIP: None\n", "", `serviceName "nats-headless" is not a headless Service`},
		{"k8s limits", "k8s/nats.yaml", "            limits:\n              cpu: \"1\"\n              memory: 1Gi\n", "", "no cpu limit"},
		{"k8s encryption key in the manifest", "k8s/tokend.yaml",
			"valueFrom:\n                secretKeyRef:\n                  name: tokend-encryption\n                  key: ENCRYPTION_KEY",
			"value: bGludC1vbmx5LWtleS1ub3QtYS1yZWFsLW9uZS0zMmI=", "ENCRYPTION_KEY must come from a Secret"},
		{"k8s nats config syntax", "k8s/nats.yaml", "jetstream {\n      store_dir", "jetstrem {\n      store_dir", `nats-server refuses the configuration: :11:1: unknown field "jetstrem"`},
		{"k8s nats routes", "k8s/nats.yaml", "nats://nats-2.nats-headless:6222", "nats://nats-3.nats-headless:6222", "routes name"},
		{"k8s NATS_URL", "k8s/tokend.yaml", ",nats://nats-2.nats-headless:4222", "", "NATS_URL names"},
		// Nobody appends to the log without the service's identity (issue 12).
		{"k8s nats no_auth_user", "k8s/nats.yaml", "    system_account: SYS", "    no_auth_user: $TOKEND_NKEY\n    system_account: SYS",
			"connections without credentials get in"},
		{"k8s nats user without permissions", "k8s/nats.yaml", "users: [ { nkey: $SYS_NKEY } ]", "users: [ { user: ops, password: s3cret } ]",
			"user ops has a password and no permissions"},
		{"compose nats without accounts", "compose.yaml", composeAccounts, "", "no authorization: any client connects without credentials"},
		// The old layout: SUBSCRIBERS sourced the log itself, which ships
		// secret hashes and sealed keys to every resource server.
		{"k8s nats exports the log", "k8s/nats.yaml", `          { stream: "_TOKEND.FEED.>", accounts: [SUBSCRIBERS] }`,
			`          { stream: "_TOKEND.FEED.>", accounts: [SUBSCRIBERS] }` + "\n" + `          { service: "$JS.API.CONSUMER.CREATE.TOKENS.*.token.key.>", response_type: stream, accounts: [SUBSCRIBERS] }`,
			`account TOKENS exports the service "$JS.API.CONSUMER.CREATE.TOKENS.*.token.key.>", which reaches the log`},
		{"compose nats exports the log's subjects", "compose.yaml", `            { stream: "_TOKEND.FEED.>", accounts: [SUBSCRIBERS] }`,
			`            { stream: "_TOKEND.FEED.>", accounts: [SUBSCRIBERS] }` + "\n" + `            { stream: "token.>", accounts: [SUBSCRIBERS] }`, `account TOKENS exports the stream "token.>", which reaches the log`},
		{"feed stream sources the log", "nats-feed.json", `"mirror": {"name": "TOKENS_FEED", "filter_subject": "tokenfeed.>"`,
			`"mirror": {"name": "TOKENS", "filter_subject": "token.key.>"`, `stream TOKENS_FEED reads stream TOKENS with the filter "token.key.>", which reaches the log`},
		{"k8s nats users not on a Secret", "k8s/nats.yaml", `include "../subscribers/users.conf"`, `include "users.conf"`,
			"included file /etc/nats/config/users.conf is not on a mounted Secret"},
		{"k8s nats client TLS", "k8s/nats.yaml",
			"    http: 127.0.0.1:8222\n    tls {\n      cert_file: /etc/nats/tls/tls.crt\n      key_file: /etc/nats/tls/tls.key\n      ca_file: /etc/nats/tls/ca.crt\n      timeout: 5\n    }\n",
			"    http: 127.0.0.1:8222\n", "the client port has no TLS"},
		{"compose nats route TLS", "compose.yaml",
			"        tls {\n          cert_file: /etc/nats/tls/server.pem\n          key_file: /etc/nats/tls/server.key\n          ca_file: /etc/nats/tls/ca.pem\n          verify_cert_and_check_known_urls: true\n          timeout: 5\n        }\n",
			"", "the cluster (route) port has no TLS"},
		{"k8s nats route authorization", "k8s/nats.yaml", "        verify_cert_and_check_known_urls: true\n", "", "routes are not authorized"},
		{"k8s nats TLS file not on a Secret", "k8s/nats.yaml", "      ca_file: /etc/nats/tls/ca.crt\n      timeout: 5\n    }\n    jetstream",
			"      ca_file: /etc/nats/config/ca.crt\n      timeout: 5\n    }\n    jetstream", "TLS file /etc/nats/config/ca.crt is not on a mounted Secret"},
		{"k8s nats monitoring public", "k8s/nats.yaml", "http: 127.0.0.1:8222", "http: 0.0.0.0:8222", `monitoring (http) listens on "0.0.0.0"`},
		{"k8s nats monitoring in a Service", "k8s/nats.yaml", "      port: 6222\n      targetPort: cluster\n",
			"      port: 6222\n      targetPort: cluster\n    - name: monitor\n      port: 8222\n", "exposes NATS monitoring"},
		{"k8s no NetworkPolicy for nats", "k8s/networkpolicy.yaml", "  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: nats\n",
			"  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: nats-old\n", "no NetworkPolicy selects the NATS pods"},
		{"k8s NetworkPolicy admits monitoring", "k8s/networkpolicy.yaml", "        - port: client\n", "        - port: client\n        - port: 8222\n",
			"admits the monitoring port 8222"},
		{"k8s NetworkPolicy routes from anywhere", "k8s/networkpolicy.yaml", "    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: nats\n",
			"    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: nats\n        - ipBlock:\n            cidr: 0.0.0.0/0\n",
			"the route port admits more than the NATS pods"},
		{"k8s tokend without NATS credentials", "k8s/tokend.yaml", "            - name: NATS_NKEY_SEED\n              value: /etc/tokend/nats/tokend.nk\n", "",
			"without NATS_NKEY_SEED or NATS_CREDS"},
		{"compose NATS port published", "compose.yaml", "      SERVER_NAME: nats-1\n    volumes:",
			"      SERVER_NAME: nats-1\n    ports:\n      - 127.0.0.1:8222:8222\n    volumes:", "publishes port 8222"},
		{"compose schema", "compose.yaml", "healthcheck:", "healthchek:", "healthchek"},
		{"compose interpolation", "compose.yaml", "${ENCRYPTION_KEY:?set", "${ENCRYPTION_KEY:-set", "loads without ENCRYPTION_KEY"},
		{"compose undefined volume", "compose.yaml", "volumes:\n  nats-1:\n", "volumes:\n", "refers to undefined volume nats-1"},
		{"compose NATS_URL", "compose.yaml", "nats://nats-3:4222", "nats://nats-3:4223", "want nats://HOST:4222"},
		{"compose nats config", "compose.yaml", "store_dir: /data", "store_dir: /tmp", "is not on a persistent volume"},
		{"Dockerfile BuildKit lint", "Dockerfile", "AS build", "as build", "BuildKit lint FromAsCasing"},
		{"Dockerfile syntax", "Dockerfile", "EXPOSE 50051", "EXPOSES 50051", "unknown instruction: EXPOSES"},
		{"Dockerfile root", "Dockerfile", "USER 65532:65532", "USER root", "want a non-root USER"},
		{"Dockerfile dynamic cgo build on a static base", "Dockerfile", "FROM gcr.io/distroless/base-debian12:nonroot", "FROM gcr.io/distroless/static-debian12:nonroot", "would not run on a static base"},
		{"Dockerfile glibc of another Debian", "Dockerfile", "FROM gcr.io/distroless/base-debian12:nonroot", "FROM gcr.io/distroless/base-debian13:nonroot", "want Debian 12's"},
		{"Dockerfile shell form", "Dockerfile", `ENTRYPOINT ["/usr/local/bin/tokend"]`, "ENTRYPOINT /usr/local/bin/tokend", "JSONArgsRecommended"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := copyDeploy(t)
			path := filepath.Join(dir, c.file)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(b), c.old); n != 1 {
				t.Fatalf("%s holds %q %d times, want once: update this case", c.file, c.old, n)
			}
			if err := os.WriteFile(path, []byte(strings.Replace(string(b), c.old, c.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, dir).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("lint of the broken copy ended with %v, want exit status 1\n%s", err, out)
			}
			if !bytes.Contains(out, []byte(c.want)) {
				t.Errorf("lint output lacks %q:\n%s", c.want, out)
			}
		})
	}
}

var reEnvAssign = regexp.MustCompile(`\b([A-Z][A-Z0-9_]*)=`)

// TestManifestVariables: every environment variable the manifests and the
// loopback script give tokend is one tokend reads (a misspelt name would be
// ignored silently and its default used).
func TestManifestVariables(t *testing.T) {
	known := map[string]bool{}
	for _, v := range app.Variables {
		known[v.Name] = true
	}
	check := func(where, name string) {
		if !known[name] {
			t.Errorf("%s sets %s, which tokend does not read (cmd/tokend/app.Variables)", where, name)
		}
	}

	var compose struct {
		Services map[string]struct {
			Build       any               `yaml:"build"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, s := range compose.Services {
		if s.Build == nil {
			continue // nats
		}
		n++
		for k := range s.Environment {
			check("compose.yaml service "+name, k)
		}
	}
	if n != 3 {
		t.Errorf("compose.yaml: %d tokend services, want 3", n)
	}

	f, err := os.Open("k8s/tokend.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	n = 0
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Env []struct{ Name string } `yaml:"env"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		for _, c := range doc.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				n++
				check("k8s/tokend.yaml "+doc.Kind, e.Name)
			}
		}
	}
	if n == 0 {
		t.Error("k8s/tokend.yaml: no env found")
	}

	// run.sh starts tokend with `env NAME=value ... "$work/bin/tokend"`.
	script, err := os.ReadFile("loopback/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)env (HOST=.*?)"\$work/bin/tokend"`).FindSubmatch(script)
	if m == nil {
		t.Fatal("loopback/run.sh: no `env ... \"$work/bin/tokend\"` line")
	}
	for _, v := range reEnvAssign.FindAllSubmatch(m[1], -1) {
		check("loopback/run.sh", string(v[1]))
	}
}

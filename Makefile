# Two commands do all set-up on a fresh machine with Go 1.26:
#   make run    runs tokend on its embedded defaults (NATS embedded, local keys)
#   make test   runs every test (vet, gofmt, race detector)
GO        ?= go
HOST      ?= 127.0.0.1
PORT      ?= 50051
DATA_DIR  ?= ./data
BENCHTIME ?= 3s
BENCHCOUNT ?= 1
FUZZTIME  ?= 30s

.PHONY: run build build-purego test test-short bench bench-peers bench-latency bench-boring peers-deps wrk proto lint lint-proto fmt interop-deps cluster softhsm

run:
	HOST=$(HOST) PORT=$(PORT) DATA_DIR=$(DATA_DIR) $(GO) run ./cmd/tokend

# The release build signs with Go's BoringCrypto module (cgo, linux/amd64
# and arm64), and local RSA keys with the system's OpenSSL when it loads
# (SIGNING_OPENSSL; README "Builds" has the figures). build-purego uses Go's own
# crypto, the portable build (cgo only where PKCS#11 needs it: cryptod, and
# tokend's pkcs11 backend when a C compiler is there; CGO_ENABLED=0 builds a
# tokend without it, as `docker build --build-arg TOKEND_BUILD=purego`).
RELEASE_ENV ?= CGO_ENABLED=1 GOEXPERIMENT=boringcrypto
PUREGO_ENV  ?= GOEXPERIMENT=

build:
	$(RELEASE_ENV) $(GO) build -o bin/ ./cmd/...

build-purego:
	$(PUREGO_ENV) $(GO) build -o bin/ ./cmd/...

# A 3-node NATS JetStream cluster and 3 tokend replicas on loopback, without
# containers, until Ctrl-C (deploy/loopback/run.sh; state in ./data/loopback).
cluster:
	GO=$(GO) deploy/loopback/run.sh

# The race detector runs on every package; the embedded NATS servers
# (single node and 3-node clusters on loopback) are started by the tests.
# The signing, DPoP and interop tests run again in the release build
# (BoringCrypto), whose signatures come from another implementation.
test: lint interop-deps softhsm
	$(GO) test -race -count=1 -timeout 25m ./...
	$(RELEASE_ENV) $(GO) test -count=1 -timeout 10m ./signing/... ./dpop/... ./test/interop/
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./dpop/

# The interop tests run the npm packages dpop and jose (pinned in
# test/interop/package-lock.json) with the machine's Node.js.
interop-deps:
	cd test/interop && npm ci --no-audit --no-fund --loglevel=error

# Installs SoftHSM2 (Debian's softhsm2), the HSM the signing/pkcs11 tests
# sign with; each test initialises its own token in a temporary directory
# (signing/pkcs11/hsmtest). Does nothing when softhsm2-util is installed.
softhsm:
	@command -v softhsm2-util >/dev/null 2>&1 || { \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q softhsm2; }

test-short:
	$(GO) test -short -count=1 ./...

# Benchmarks measured side by side in one run; see README "Benchmarks".
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) -timeout 60m ./signing/... ./test/...

# tokend side by side with node-oidc-provider and Ory Hydra, alternating
# wrk runs on loopback (test/peers/README.md; PEERS_FLAGS, e.g. -d 5s
# -rounds 5, go to test/peers). bench-latency (LATENCY_FLAGS): p50/p99 of GenerateTokens,
# RefreshTokens and ValidateDPoP over h2c and HTTP/1.1 JSON at c=1, 16, 64.
PEERS_BIN   ?= bin/peers
PEERS_FLAGS ?=
LATENCY_FLAGS ?=

bench-peers: peers-deps
	$(GO) run ./test/peers -bin $(PEERS_BIN) $(PEERS_FLAGS)

bench-latency: peers-deps
	$(GO) run ./test/peers latency -bin $(PEERS_BIN) $(LATENCY_FLAGS)

# Signing with signing/local in both builds, in turn (test/peers/boring.sh).
bench-boring:
	GO=$(GO) test/peers/boring.sh

# Builds what bench-peers runs: tokend as `make build` and `make
# build-purego` build it, Ory Hydra v2.3.0 (test/peers/hydra/go.mod, SQLite
# built in for its in-memory DSN), node-oidc-provider (npm ci of
# test/peers/node/package-lock.json), and wrk from Debian.
peers-deps: wrk
	$(RELEASE_ENV) $(GO) build -o $(PEERS_BIN)/tokend ./cmd/tokend
	CGO_ENABLED=0 $(PUREGO_ENV) $(GO) build -o $(PEERS_BIN)/tokend-purego ./cmd/tokend
	cd test/peers/hydra && CGO_ENABLED=1 $(GO) build -tags sqlite,sqlite_omit_load_extension \
	  -o $(CURDIR)/$(PEERS_BIN)/hydra github.com/ory/hydra/v2
	cd test/peers/node && npm ci --no-audit --no-fund --loglevel=error

# Installs wrk, the load generator of bench-peers, and Node.js with npm
# (Debian's packages; node-oidc-provider 9 needs Node.js 20.19 or later)
# when they are missing.
wrk:
	@pkgs=; command -v wrk >/dev/null 2>&1 || pkgs=wrk; \
	  command -v node >/dev/null 2>&1 || pkgs="$$pkgs nodejs npm"; \
	  [ -z "$$pkgs" ] || { sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkgs; }
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)' || \
	  { echo "node-oidc-provider 9 needs Node.js 20.19 or later, this is $$(node --version)"; exit 1; }

# Regenerates proto/**.pb.go and *.connect.go with buf, protoc-gen-go and
# protoc-gen-connect-go run through go tool (pinned in proto/tools).
proto:
	$(GO) tool -modfile=proto/tools/go.mod buf generate proto --template proto/buf.gen.yaml

lint-proto:
	$(GO) tool -modfile=proto/tools/go.mod buf lint proto

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

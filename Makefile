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

.PHONY: run build test test-short bench proto lint lint-proto fmt interop-deps cluster softhsm

run:
	HOST=$(HOST) PORT=$(PORT) DATA_DIR=$(DATA_DIR) $(GO) run ./cmd/tokend

build:
	$(GO) build -o bin/ ./cmd/...

# A 3-node NATS JetStream cluster and 3 tokend replicas on loopback, without
# containers, until Ctrl-C (deploy/loopback/run.sh; state in ./data/loopback).
cluster:
	GO=$(GO) deploy/loopback/run.sh

# The race detector runs on every package; the embedded NATS servers
# (single node and 3-node clusters on loopback) are started by the tests.
test: lint interop-deps softhsm
	$(GO) test -race -count=1 -timeout 25m ./...
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

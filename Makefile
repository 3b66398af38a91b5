# Capstan — build, test and run targets. Every tool the targets need is installed
# here (Go modules from the module proxy) into ./bin, so a clean clone works.

GO        ?= go
BIN       := $(CURDIR)/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/capstanhq/capstan/internal/version.Version=$(VERSION)
GOFLAGS_BUILD := -trimpath -ldflags '$(LDFLAGS)'

BUF_VERSION                  := v1.75.0
PROTOC_GEN_GO_VERSION        := v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION := v1.19.1

.PHONY: all build run test test-cluster test-short vet conformance generate generate-check tools bench bench-deps e2e image cluster-up cluster-down clean

all: build

## build: static binaries into ./bin
build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ ./cmd/...

## run: a single-node dev server on ./data with the sample policy
run: build
	$(BIN)/capstan dev

## test: the whole suite (vet, unit, conformance, raft, server tests)
test: vet
	$(GO) test -count=1 -timeout 25m ./...

## test-cluster: only the multi-node cluster tests (in-process 3/5-node clusters and three
## real processes); `make test` runs them too (CAPSTAN_CLUSTER_TESTS=0 leaves them out)
test-cluster:
	CAPSTAN_CLUSTER_TESTS=1 $(GO) test -count=1 -p 1 -timeout 20m ./cluster ./cmd/capstan

## test-short: quick tests only
test-short:
	$(GO) test -short -count=1 ./...

vet:
	$(GO) vet ./...

## conformance: run the policy conformance cases against the embedded engine
conformance: build
	$(BIN)/capstanctl policy test ../shared/conformance testdata/conformance

## tools: protobuf toolchain pinned into ./bin
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-connect-go

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-connect-go:
	GOBIN=$(BIN) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_GO_VERSION)

## generate: regenerate checked-in protobuf code
generate: tools
	cd proto && PATH=$(BIN):$$PATH $(BIN)/buf lint && PATH=$(BIN):$$PATH $(BIN)/buf generate

## generate-check: fail when generated code is stale
generate-check: generate
	git diff --exit-code -- internal/gen

## bench: the short default bench suite (writes bench/results/)
bench: build bench-deps
	$(BIN)/capstan-bench -suite short -out bench/results

## bench-deps: the Redis and etcd servers behind the bench baselines (Debian's
## redis-server and etcd-server; needs root). Without them those targets are
## reported "not available" and the rest of the suite still runs.
bench-deps:
	@if command -v redis-server >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1; then \
	  echo "bench-deps: redis-server and etcd already installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "bench-deps: installing redis-server and etcd-server (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server etcd-server >/dev/null) \
	    || echo "bench-deps: apt-get failed; the redis and etcd baselines will be reported not available" >&2; \
	else \
	  echo "bench-deps: not root or no apt-get; install redis-server and etcd-server by hand for the baselines" >&2; \
	fi

## e2e: docker-compose fault-injection suite (needs a Docker engine; under 15 minutes;
## a failed check leaves the history, visualisation and node logs in e2e/out/)
e2e: image
	$(GO) test -tags e2e -count=1 -v -timeout 14m ./e2e/...

## image: FROM scratch image with the static binaries (bin/ is the build context;
## the .dockerignore written there keeps the context to capstan and capstanctl)
image: build
	printf '*\n!capstan\n!capstanctl\n' > $(BIN)/.dockerignore
	docker build -t capstan:$(VERSION) -t capstan:latest -f Dockerfile $(BIN)

## cluster-up: the 5-node, 3-region compose cluster on ports 17070-17074 (fresh data)
cluster-up: image
	docker-compose -p capstan --profile spare down -v --remove-orphans >/dev/null 2>&1 || true
	docker-compose -p capstan up -d
	@for i in $$(seq 90); do \
	  s=$$(docker inspect -f '{{.State.Health.Status}}' capstan-n1 capstan-n2 capstan-n3 capstan-n4 capstan-n5 2>/dev/null | sort -u); \
	  if [ "$$s" = healthy ]; then echo "cluster healthy: http://127.0.0.1:17070 .. :17074 (docs/docker.md)"; exit 0; fi; \
	  sleep 2; \
	done; echo "cluster not healthy after 180s: see docker-compose -p capstan ps / logs" >&2; exit 1

## cluster-down: stop the compose cluster and delete its volumes
cluster-down:
	docker-compose -p capstan --profile spare down -v --remove-orphans

clean:
	rm -rf $(BIN) data

# ober: build, test and lint. Tests need root (BPF, network namespaces).
GO      ?= go
BIN     := bin/ober
PKGS    := ./...

.PHONY: all build deps generate check-generated test lint fuzz bench lab clean

all: build

# Debian packages for building, testing and the lab (as root).
deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$(grep -v '^#' .ci/packages)
	$(GO) mod download

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/ober

# Recompile bpf/*.c into the committed objects and Go bindings (needs clang).
generate:
	$(GO) generate ./loader/ ./bench/

# CI: the committed objects must be what the sources compile to.
check-generated: generate
	@git diff --exit-code --stat -- loader bench || \
		{ echo "committed BPF objects are stale: run 'make generate' and commit"; exit 1; }

test:
	$(GO) test -count=1 -timeout 30m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

# A longer run of the packet fuzzer than the seed corpus `make test` runs.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzXDP -fuzztime 60s ./loader/

bench:
	$(GO) test -run '^$$' -bench . -benchtime 200000x ./bench/

# The lab (routers, three ober nodes, S3 backends, a client, in network
# namespaces) arrives with the lab issue. Until then this shows the
# dataplane on its own: real TCP connections from a client namespace land
# on the instance sockets and CPUs the Maglev table predicts, strangers
# are kept off the plain-HTTP ports, and a table change breaks nothing.
lab:
	@echo "ober lab: the full site (BIRD router, 3 ober nodes, S3 backends, client) comes with the lab issue."
	@echo "Showing the dataplane in two network namespaces instead (needs root):"
	$(GO) test -count=1 -v -run 'TestNamespaceTraffic' ./loader/ 2>&1 | grep -E 'connections|PASS|FAIL|ok'

clean:
	rm -rf bin

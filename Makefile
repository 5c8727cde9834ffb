# ober: build, test and lint. Tests need root (BPF, network namespaces).
GO      ?= go
BIN     := bin/ober
PKGS    := ./...
SHELL   := /bin/bash

.PHONY: all build deps haproxy30 generate check-generated check-files test lint fuzz bench lab clean

all: build

# Debian packages for building, testing and the lab (as root), and
# HAProxy 3.0 beside the system's 2.6.
deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$(grep -v '^#' .ci/packages)
	$(GO) mod download
	$(MAKE) haproxy30

# HAProxy 3.0 (Debian 13's) in $(HAPROXY30_DIR): a debootstrapped trixie
# root and the wrapper $(HAPROXY30_DIR)/haproxy that runs it, for
# haproxy.binary, `ober bench --haproxy` and the tests. Skipped when the
# wrapper already answers; about a minute and 230 MB otherwise.
HAPROXY30_DIR ?= /var/cache/ober/haproxy-3.0
haproxy30:
	bash lab/haproxy-root.sh $(HAPROXY30_DIR)

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

# CI: no tracked file over 1 MiB (build outputs belong in .gitignore).
MAX_FILE := 1048576
check-files:
	@big=$$(git ls-files -z | xargs -0 stat -c '%s %n' -- | awk -v max=$(MAX_FILE) '$$1 > max'); \
		if [ -n "$$big" ]; then echo "tracked files over $(MAX_FILE) bytes:"; echo "$$big"; exit 1; fi

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

# The bench harness (BENCHMARKS.md): about 12 minutes on 2 CPUs, writes
# bench-results/bench.json and bench.svg. `bin/ober bench --quick` takes
# about one.
bench: build
	$(BIN) bench --out bench-results

# The lab: a BIRD router spreading the VIPs over three ober nodes (BGP,
# ECMP), Ceph RGW on two backend hosts and a client, in network namespaces
# (as root), then a demo: checksummed S3 transfers through the VIP, where
# each connection landed, HAProxy killed on a node with the route leaving
# and traffic going on, and back. The lab stays up; `bin/ober lab down`
# removes it.
lab: build
	$(BIN) lab up

clean:
	rm -rf bin

# ober: build, test and lint. Tests need root (BPF, network namespaces).
GO      ?= go
BIN     := bin/ober
PKGS    := ./...

.PHONY: all build generate check-generated test lint fuzz bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/ober

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

clean:
	rm -rf bin

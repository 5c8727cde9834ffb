package loader

// The compiled objects and their Go bindings are committed so that a plain
// `go build` needs no clang; `make generate` refreshes them and CI checks
// that they match the sources. The multiarch include paths let clang's BPF
// target find <asm/...> from Debian's kernel headers.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -target bpfel ober ../bpf/ober.c -- -I../bpf

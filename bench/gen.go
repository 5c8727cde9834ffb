package bench

// floor_xdp (bpf/floor.c) is compiled here and committed with its Go
// bindings, like the loader's objects, so that a plain `go build` needs no
// clang; `make generate` refreshes it.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -target bpfel floor ../bpf/floor.c

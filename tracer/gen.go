package tracer

// The generated tcpwatch_bpfel.{go,o} are committed so that `go build` needs
// no clang; `make generate` rebuilds them and CI fails if they are stale.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror" -target bpfel -type event tcpwatch ../bpf/tcpwatch.bpf.c -- -I../bpf -I..

package main

// The floor's object is committed like tcpwatch's, so the benchmark builds
// without clang; make generate rebuilds it.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror" -target bpfel floor ../../../bpf/floor.bpf.c -- -I../../../bpf -I../../..

// Package bpf is tcpwatch's kernel half, compiled: the CO-RE object built
// from tcpwatch.bpf.c, its typed handles, and the Go twins of the record
// and enums in record.h. The generated files are committed so that `go
// build` needs no clang; `make generate` rebuilds them and CI fails if they
// are stale.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package bpf -type event -type lifecycle -type tw_event_kind -type tw_event_flag -type tw_owner_source -type tw_rst_reason -type tw_tcp_limit -type tw_nf_hook -type tw_counter -type tw_listen_key -type tw_synack -type tw_timewait_seen Tcpwatch tcpwatch.bpf.c -- -I. -I..
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package bpf -type tw_sock_row -type tw_row_flag Exposure exposure.bpf.c -- -I. -I..

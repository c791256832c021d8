// Package testkit is the one test kit of tcpwatch's tests: when a
// privileged test may run, socket options, loopback load, JSON lines,
// and the invariants every story obeys. It imports nothing of tcpwatch,
// so every package's tests can use it, the tracker's and the lab's own
// included; what needs the product lives in its subpackages: hosts
// (network namespaces joined by cables, connections between them),
// cgroups (real cgroup v2 directories) and sinks (recording sinks).
//
// Production code never imports it: tcpwatch's own internal helpers
// (netnsexec) live beside it, in internal/.
package testkit

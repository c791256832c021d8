package engine

import (
	"net/netip"
	"strings"

	"github.com/tcpwatch/tcpwatch/tracer/containers"
)

// Filter keeps the connections a person asked about. Zero values match
// everything.
type Filter struct {
	PID   uint32
	Comm  string
	Addr  netip.Prefix
	Port  uint16 // also filtered in the kernel (Config.Kernel)
	NetNS uint32 // also filtered in the kernel (Config.Kernel)
	// Container keeps connections whose container id starts with it;
	// Cgroup those whose cgroup path starts with it. Both are decided in
	// user space on the resolved cgroup (Config.Cgroups).
	Container string
	Cgroup    string
}

// Match says whether an enriched item passes the filter. Losses concern
// no connection and always pass.
func (f *Filter) Match(it *Item) bool {
	if it.Loss != nil {
		return true
	}
	c := it.conn()
	return f.matchConn(&c) && f.MatchCgroup(it.Cgroup)
}

func (f *Filter) matchConn(c *conn) bool {
	switch {
	case f.NetNS != 0 && c.netns != f.NetNS:
		return false
	case f.Port != 0 && c.local.Port() != f.Port && c.remote.Port() != f.Port:
		return false
	case f.PID != 0 && c.pid != f.PID:
		return false
	case f.Comm != "" && c.comm != f.Comm:
		return false
	case f.Addr.IsValid() && !f.Addr.Contains(c.local.Addr().Unmap()) && !f.Addr.Contains(c.remote.Addr().Unmap()):
		return false
	}
	return true
}

// MatchCgroup says whether a connection in the cgroup described by info
// passes the Container and Cgroup parts of the filter.
func (f *Filter) MatchCgroup(info containers.Info) bool {
	switch {
	case f.Container != "" && (info.ID == "" || !strings.HasPrefix(info.ID, f.Container)):
		return false
	case f.Cgroup != "" && (info.Path == "" || !strings.HasPrefix(info.Path, f.Cgroup)):
		return false
	}
	return true
}

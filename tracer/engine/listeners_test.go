package engine

import (
	"net/netip"
	"testing"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
)

// The kernel half's SYN-ACK counters join the listener of their
// namespace, port and family: a [::] listener beside a 0.0.0.0 one on the
// same port takes only its own; the namespace's counters come with each.
func TestListenerQueuesJoinSynacksByFamily(t *testing.T) {
	space := sockdiag.NetnsCounters{SyncookiesSent: 4, ReqQFullDrop: 1, ListenOverflows: 2, Syncookies: 1, Read: true}
	ls := []sockdiag.Listener{
		{NetNS: 7, Local: netip.MustParseAddrPort("0.0.0.0:80"), Inode: 1, Queue: 1, Limit: 8, Space: space},
		{NetNS: 7, Local: netip.MustParseAddrPort("[::]:80"), Inode: 2, Limit: 8, Space: space},
		{NetNS: 8, Local: netip.MustParseAddrPort("0.0.0.0:80"), Inode: 3, Limit: 8},
	}
	syn := []tracer.SynackListener{
		{NetNS: 7, Port: 80, Family: afInet6, Retransmits: 9, Clients: 3, AckedClients: 1, SynQueue: 2, SynQueueMax: 4},
		{NetNS: 9, Port: 80, Family: 2, Retransmits: 1, Clients: 1},
	}
	qs := listenerQueues(ls, syn)
	if len(qs) != 3 {
		t.Fatalf("%+v", qs)
	}
	if qs[0].Synack.Retransmits != 0 || qs[2].Synack.Retransmits != 0 {
		t.Errorf("counters joined the wrong listener: %+v, %+v", qs[0].Synack, qs[2].Synack)
	}
	if s := qs[1].Synack; s.Retransmits != 9 || s.Clients != 3 || s.Acked != 1 || s.SynQueue != 2 {
		t.Errorf("[::]:80: %+v", s)
	}
	if sp := qs[0].Space; !sp.Read || sp.CookiesSent != 4 || sp.ReqQFullDrop != 1 || sp.ListenOverflows != 2 || sp.Syncookies != 1 {
		t.Errorf("namespace counters: %+v", sp)
	}
}

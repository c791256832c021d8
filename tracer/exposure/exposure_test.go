package exposure

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

func defaults() Settings {
	return Settings{
		KeepaliveIdle: 7200 * time.Second, KeepaliveIdleFrom: FromSysctl,
		KeepaliveIntvl: 75 * time.Second, KeepaliveIntvlFrom: FromSysctl,
		KeepaliveCount: 9, KeepaliveCountFrom: FromSysctl,
		RTOMax: 120 * time.Second, RTOMaxFrom: FromKernel, Retries2: 15,
		FinTimeout: 60 * time.Second, FinTimeoutFrom: FromSysctl,
	}
}

func TestAssess(t *testing.T) {
	never := Detection{Never: true, By: ByNothing}
	budget := Detection{After: 924600 * time.Millisecond, By: ByRetries2}
	for _, tc := range []struct {
		name          string
		edit          func(*Socket)
		idle, sending Detection
		class         Class
	}{
		{"keepalive off: an idle connection is never checked", func(s *Socket) {}, never, budget, Never},
		{"kernel defaults: 7200 + 9 × 75 s", func(s *Socket) { s.Settings.Keepalive = true },
			Detection{After: 7875 * time.Second, By: ByKeepalive}, budget, Hours},
		{"Go's default: 15 s idle, 9 probes 15 s apart", func(s *Socket) {
			s.Settings.Keepalive = true
			s.Settings.KeepaliveIdle, s.Settings.KeepaliveIntvl = 15*time.Second, 15*time.Second
		}, Detection{After: 150 * time.Second, By: ByKeepalive}, budget, Minutes},
		{"user timeout alone does not look at an idle connection", func(s *Socket) { s.Settings.UserTimeout = 30 * time.Second },
			never, Detection{After: 30 * time.Second, By: ByUserTimeout}, Never},
		{"user timeout with keepalive: the first expiry past it, probes not counted", func(s *Socket) {
			s.Settings.Keepalive = true
			s.Settings.KeepaliveIdle, s.Settings.KeepaliveIntvl, s.Settings.KeepaliveCount = 10*time.Second, 3*time.Second, 2
			s.Settings.UserTimeout = 20 * time.Second
		}, Detection{After: 22 * time.Second, By: ByKeepalive}, Detection{After: 20 * time.Second, By: ByUserTimeout}, Seconds},
		{"user timeout shorter than the idle time: one probe, one interval", func(s *Socket) {
			s.Settings.Keepalive = true
			s.Settings.KeepaliveIdle, s.Settings.KeepaliveIntvl = 10*time.Second, 3*time.Second
			s.Settings.UserTimeout = time.Second
		}, Detection{After: 13 * time.Second, By: ByKeepalive}, Detection{After: time.Second, By: ByUserTimeout}, Seconds},
		{"tcp_retries2 = 5 and 3 s keepalive", func(s *Socket) {
			s.Settings.Keepalive = true
			s.Settings.Retries2 = 5
			s.Settings.KeepaliveIdle, s.Settings.KeepaliveIntvl, s.Settings.KeepaliveCount = 3*time.Second, time.Second, 3
		}, Detection{After: 6 * time.Second, By: ByKeepalive}, Detection{After: 12600 * time.Millisecond, By: ByRetries2}, Seconds},
		{"an orphan in FIN_WAIT2 waits tcp_fin_timeout", func(s *Socket) { s.Orphan, s.State = true, tcp.StateFinWait2 },
			Detection{After: time.Minute, By: ByFinTimeout}, Detection{After: 102200 * time.Millisecond, By: ByOrphanRetries}, Minutes},
		{"an orphan in FIN_WAIT1 is sending its FIN", func(s *Socket) {
			s.Orphan, s.State, s.RTO = true, tcp.StateFinWait1, 200*time.Millisecond
			s.Settings.OrphanRetries = 0
		}, Detection{After: 102200 * time.Millisecond, By: ByOrphanRetries}, Detection{After: 102200 * time.Millisecond, By: ByOrphanRetries}, Minutes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Socket{State: tcp.StateEstablished, Settings: defaults()}
			tc.edit(s)
			a := Assess(s)
			if a.Idle != tc.idle || a.Sending != tc.sending || a.Class != tc.class {
				t.Errorf("got idle %+v sending %+v class %v, want %+v %+v %v", a.Idle, a.Sending, a.Class, tc.idle, tc.sending, tc.class)
			}
		})
	}
}

func TestBuildGroupsWorstFirst(t *testing.T) {
	ap := netip.MustParseAddrPort
	ka := defaults()
	ka.Keepalive = true
	socks := []Socket{
		{State: tcp.StateListen, NetNS: 1, Local: ap("10.0.0.1:8080")},
		{State: tcp.StateEstablished, NetNS: 1, Local: ap("10.0.0.1:8080"), Remote: ap("10.0.0.2:40000"), PID: 7, Comm: "server", Settings: ka},
		{State: tcp.StateEstablished, NetNS: 1, Local: ap("10.0.0.1:50000"), Remote: ap("10.0.0.9:5432"), PID: 8, Comm: "psql", Settings: defaults(), Idle: time.Second},
		{State: tcp.StateEstablished, NetNS: 1, Local: ap("10.0.0.1:50001"), Remote: ap("10.0.0.9:5432"), PID: 8, Comm: "psql", Settings: defaults(), Idle: 3 * time.Second},
		{State: tcp.StateTimeWait, NetNS: 1, Local: ap("10.0.0.1:50002"), Remote: ap("10.0.0.9:5432")},
	}
	r := Build(socks)
	if r.Listening != 1 || r.TimeWait != 1 || len(r.Connections) != 3 || r.Namespaces != 1 {
		t.Fatalf("listening %d time_wait %d connections %d namespaces %d", r.Listening, r.TimeWait, len(r.Connections), r.Namespaces)
	}
	if len(r.Groups) != 2 {
		t.Fatalf("%d groups, want 2", len(r.Groups))
	}
	g := r.Groups[0]
	if g.First().Comm != "psql" || len(g.Connections) != 2 || g.IdleMin != time.Second || g.IdleMax != 3*time.Second || g.First().Assessment.Class != Never {
		t.Errorf("first group: %s ×%d idle %v..%v class %v", g.First().Comm, len(g.Connections), g.IdleMin, g.IdleMax, g.First().Assessment.Class)
	}
	if p := r.Groups[1].First().Peer; !p.Inbound || p.Port != 8080 {
		t.Errorf("the server's connection should be told as a client of its port 8080: %+v", p)
	}
	if r.Tally != (Tally{Never: 2, Hours: 1}) {
		t.Errorf("tally %v", r.Tally)
	}
	if len(r.ByProcess) != 2 || r.ByProcess[0].Comm != "psql" || r.ByProcess[0].Tally[Never] != 2 {
		t.Errorf("by process %+v", r.ByProcess)
	}
	if len(r.ByPeer) != 2 || r.ByPeer[0].Peer.Port != 5432 {
		t.Errorf("by peer %+v", r.ByPeer)
	}
}

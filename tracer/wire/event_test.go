package wire

import (
	"github.com/tcpwatch/tcpwatch/bpf"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"

	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
)

// Offsets of struct event in bpf/record.h, written out by hand so the
// decoder is checked against the C layout, not against itself.
const (
	offTs, offCookie, offFirstSeen          = 0, 8, 16
	offSaddr, offDaddr                      = 24, 40
	offNetns, offPid, offComm, offInode     = 56, 60, 64, 80
	offFamily, offSport, offDport, offFlags = 84, 86, 88, 90
	offKind, offState, offOldState          = 92, 93, 94
	offCAState, offRetransmits              = 95, 96
	offBackoff, offProbesOut, offKAProbes   = 97, 98, 99
	offRetries2, offSynRetries              = 100, 101
	offOrphanRetries, offSynLinear          = 102, 103
	offKAOn, offOwnerSource, offNFHook      = 104, 105, 106
	offSkErr, offSkErrSoft, offDetail       = 108, 112, 116
	offExitCode, offRTO, offRTOMax          = 120, 124, 128
	offSRTT, offPacketsOut, offRetransOut   = 132, 136, 140
	offBytesInFlight, offTotalRetrans       = 144, 148
	offKATime, offKAIntvl, offUserTimeout   = 152, 156, 160
	offAckAge, offCgroupID                  = 164, 168
	offSndWnd, offNotSent, offDrops         = 176, 180, 184
	offThread                               = 192
	wantRecordSize                          = 208
)

type rawRecord []byte

func newRaw() rawRecord { return make(rawRecord, wantRecordSize) }

func (r rawRecord) u8(off int, v uint8)   { r[off] = v }
func (r rawRecord) u16(off int, v uint16) { binary.LittleEndian.PutUint16(r[off:], v) }
func (r rawRecord) u32(off int, v uint32) { binary.LittleEndian.PutUint32(r[off:], v) }
func (r rawRecord) u64(off int, v uint64) { binary.LittleEndian.PutUint64(r[off:], v) }

// baseRecord is an established IPv4 connection 10.0.0.1:40000 -> 10.0.0.2:80.
func baseRecord(kind Kind) rawRecord {
	r := newRaw()
	r.u64(offTs, 5_000_000_000)
	r.u64(offCookie, 0xabc)
	r.u64(offFirstSeen, 1_000_000_000)
	copy(r[offSaddr:], []byte{10, 0, 0, 1})
	copy(r[offDaddr:], []byte{10, 0, 0, 2})
	r.u32(offNetns, 4026531840)
	r.u32(offPid, 4242)
	copy(r[offComm:], "curl")
	copy(r[offThread:], "curl")
	r.u16(offFamily, 2)
	r.u16(offSport, 40000)
	r.u16(offDport, 80)
	r.u8(offKind, uint8(kind))
	r.u8(offState, uint8(tcp.StateEstablished))
	r.u8(offRetries2, 15)
	r.u8(offSynRetries, 6)
	r.u8(offKAProbes, 9)
	r.u32(offRTO, 200)
	r.u32(offRTOMax, 120000)
	r.u32(offKATime, 7200000)
	r.u32(offKAIntvl, 75000)
	r.u64(offCgroupID, 0x1_0000_1234) // above 32 bits: the whole u64 must arrive
	return r
}

func decode(t *testing.T, r rawRecord) Event {
	t.Helper()
	var ev Event
	if err := Decode(r, NewClock(0, time.Unix(1_700_000_000, 0)), &ev); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return ev
}

func TestRecordSizeMatchesC(t *testing.T) {
	if recordSize != wantRecordSize {
		t.Fatalf("Go record is %d bytes, struct event is %d", recordSize, wantRecordSize)
	}
}

// The offsets above must be the compiler's: read them from the BTF of the
// committed BPF object.
func TestOffsetsMatchBTF(t *testing.T) {
	spec, err := bpf.LoadTcpwatch()
	if err != nil {
		t.Fatal(err)
	}
	var st *btf.Struct
	if err := spec.Types.TypeByName("event", &st); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"ts_ns": offTs, "cookie": offCookie, "first_seen_ns": offFirstSeen, "saddr": offSaddr,
		"daddr": offDaddr, "netns": offNetns, "pid": offPid, "comm": offComm, "family": offFamily,
		"sport": offSport, "dport": offDport, "kind": offKind, "state": offState,
		"old_state": offOldState, "ca_state": offCAState, "retransmits": offRetransmits,
		"backoff": offBackoff, "probes_out": offProbesOut, "keepalive_probes": offKAProbes,
		"retries2": offRetries2, "syn_retries": offSynRetries, "flags": offFlags,
		"keepalive_on": offKAOn, "inode": offInode, "orphan_retries": offOrphanRetries,
		"syn_linear_timeouts": offSynLinear, "owner_source": offOwnerSource, "sk_err": offSkErr, "sk_err_soft": offSkErrSoft,
		"detail": offDetail, "exit_code": offExitCode, "rto_ms": offRTO, "rto_max_ms": offRTOMax,
		"srtt_us": offSRTT, "packets_out": offPacketsOut, "retrans_out": offRetransOut,
		"bytes_in_flight": offBytesInFlight, "total_retrans": offTotalRetrans,
		"keepalive_time_ms": offKATime, "keepalive_intvl_ms": offKAIntvl,
		"user_timeout_ms": offUserTimeout, "ack_age_ms": offAckAge, "cgroup_id": offCgroupID,
		"nf_hook": offNFHook, "snd_wnd": offSndWnd, "notsent_bytes": offNotSent, "drops": offDrops,
		"thread": offThread,
	}
	for _, m := range st.Members {
		off, ok := want[m.Name]
		if !ok {
			if m.Name != "_pad" && m.Name != "_pad2" {
				t.Errorf("struct event has a member %q the test does not know", m.Name)
			}
			continue
		}
		if int(m.Offset.Bytes()) != off {
			t.Errorf("%s: BTF offset %d, test assumes %d", m.Name, m.Offset.Bytes(), off)
		}
	}
	if int(st.Size) != wantRecordSize {
		t.Errorf("struct event is %d bytes in BTF", st.Size)
	}
}

func TestDecodeCommonFields(t *testing.T) {
	ev := decode(t, baseRecord(KindState))
	if ev.Mono != 5*time.Second || ev.FirstSeen != time.Second {
		t.Errorf("times: mono %v first %v", ev.Mono, ev.FirstSeen)
	}
	if want := time.Unix(1_700_000_005, 0); !ev.Time.Equal(want) {
		t.Errorf("wall time %v, want %v", ev.Time, want)
	}
	if ev.Local != netip.MustParseAddrPort("10.0.0.1:40000") || ev.Remote != netip.MustParseAddrPort("10.0.0.2:80") {
		t.Errorf("tuple %v > %v", ev.Local, ev.Remote)
	}
	if ev.Cookie != 0xabc || ev.NetNS != 4026531840 || ev.PID != 4242 || ev.Comm() != "curl" {
		t.Errorf("identity: cookie %x netns %d pid %d comm %q", ev.Cookie, ev.NetNS, ev.PID, ev.Comm())
	}
	if ev.CgroupID != 0x1_0000_1234 {
		t.Errorf("cgroup id %#x", ev.CgroupID)
	}
	s := ev.Settings
	if s.Retries2 != 15 || s.SynRetries != 6 || s.KeepaliveTime != 2*time.Hour ||
		s.KeepaliveIntvl != 75*time.Second || s.KeepaliveProbes != 9 {
		t.Errorf("settings %+v", s)
	}
	if ev.RTO != 200*time.Millisecond || ev.RTOMax != 120*time.Second {
		t.Errorf("rto %v max %v", ev.RTO, ev.RTOMax)
	}
}

func TestDecodeEveryKind(t *testing.T) {
	tests := []struct {
		name  string
		build func() rawRecord
		check func(t *testing.T, ev Event)
	}{
		{"state", func() rawRecord {
			r := baseRecord(KindState)
			r.u8(offOldState, uint8(tcp.StateEstablished))
			r.u8(offState, uint8(tcp.StateClose))
			r.u32(offSkErr, 110)
			return r
		}, func(t *testing.T, ev Event) {
			if ev.Kind != KindState || ev.OldState != tcp.StateEstablished || ev.State != tcp.StateClose || ev.SkErr != 110 {
				t.Errorf("%v %v->%v err %d", ev.Kind, ev.OldState, ev.State, ev.SkErr)
			}
			if tcp.ErrnoName(ev.SkErr) != "ETIMEDOUT" {
				t.Errorf("errno name %q", tcp.ErrnoName(ev.SkErr))
			}
		}},
		{"retransmit", func() rawRecord {
			r := baseRecord(KindRetransmit)
			r.u8(offCAState, uint8(tcp.CALoss))
			r.u8(offRetransmits, 3)
			r.u8(offBackoff, 3)
			r.u32(offRTO, 1600)
			r.u32(offPacketsOut, 4)
			r.u32(offRetransOut, 1)
			r.u32(offBytesInFlight, 5792)
			r.u32(offTotalRetrans, 7)
			r.u32(offAckAge, 3200)
			r.u32(offSRTT, 150)
			return r
		}, func(t *testing.T, ev Event) {
			if ev.CAState != tcp.CALoss || ev.Retransmits != 3 || ev.Backoff != 3 || ev.RTO != 1600*time.Millisecond ||
				ev.PacketsOut != 4 || ev.RetransOut != 1 || ev.BytesInFlight != 5792 || ev.TotalRetrans != 7 ||
				ev.AckAge != 3200*time.Millisecond || ev.SRTT != 150*time.Microsecond {
				t.Errorf("%+v", ev)
			}
		}},
		{"send_reset", func() rawRecord {
			r := baseRecord(KindSendReset)
			r.u32(offDetail, 11)
			return r
		}, func(t *testing.T, ev Event) {
			if ev.Detail != 11 || tcp.FallbackResetReasons.Name(ev.Detail) != "TCP_ABORT_ON_CLOSE" {
				t.Errorf("reason %d %q", ev.Detail, tcp.FallbackResetReasons.Name(ev.Detail))
			}
		}},
		{"send_reset without a socket (IPv6)", func() rawRecord {
			r := newRaw()
			r.u8(offKind, uint8(KindSendReset))
			r.u16(offFlags, uint16(FlagReplyReset|FlagNoSocket))
			r.u16(offFamily, 10)
			copy(r[offSaddr:], netip.MustParseAddr("fd00::2").AsSlice())
			copy(r[offDaddr:], netip.MustParseAddr("fd00::1").AsSlice())
			r.u16(offSport, 80)
			r.u16(offDport, 5555)
			r.u32(offDetail, 1)
			return r
		}, func(t *testing.T, ev Event) {
			if ev.Flags != FlagReplyReset|FlagNoSocket || ev.Local != netip.MustParseAddrPort("[fd00::2]:80") ||
				ev.Remote != netip.MustParseAddrPort("[fd00::1]:5555") || tcp.FallbackResetReasons.Name(ev.Detail) != "NO_SOCKET" {
				t.Errorf("%v > %v flags %b reason %d", ev.Local, ev.Remote, ev.Flags, ev.Detail)
			}
		}},
		{"receive_reset", func() rawRecord { return baseRecord(KindRecvReset) }, func(t *testing.T, ev Event) {
			if ev.Kind != KindRecvReset || ev.Kind.String() != "receive_reset" {
				t.Errorf("kind %v", ev.Kind)
			}
		}},
		{"error", func() rawRecord {
			r := baseRecord(KindError)
			r.u32(offDetail, 113)
			r.u32(offSkErrSoft, 113)
			return r
		}, func(t *testing.T, ev Event) {
			if tcp.ErrnoName(ev.Detail) != "EHOSTUNREACH" || ev.SkErrSoft != 113 {
				t.Errorf("detail %d soft %d", ev.Detail, ev.SkErrSoft)
			}
		}},
		{"cong_state", func() rawRecord {
			r := baseRecord(KindCongState)
			r.u8(offOldState, uint8(tcp.CALoss))
			r.u8(offCAState, uint8(tcp.CAOpen))
			return r
		}, func(t *testing.T, ev Event) {
			if ev.OldCA != tcp.CALoss || ev.CAState != tcp.CAOpen || ev.OldState != 0 {
				t.Errorf("ca %v->%v old state %v", ev.OldCA, ev.CAState, ev.OldState)
			}
		}},
		{"keepalive", func() rawRecord {
			r := baseRecord(KindKeepalive)
			r.u16(offFlags, uint16(FlagProbeSent|FlagInKeepalive))
			r.u8(offProbesOut, 2)
			r.u8(offKAOn, 1)
			r.u32(offUserTimeout, 30000)
			return r
		}, func(t *testing.T, ev Event) {
			if ev.Flags&FlagProbeSent == 0 || ev.ProbesOut != 2 || !ev.Settings.KeepaliveOn ||
				ev.Settings.UserTimeout != 30*time.Second {
				t.Errorf("%+v", ev)
			}
		}},
		{"window probe", func() rawRecord {
			r := baseRecord(KindProbe0)
			r.u16(offFlags, uint16(FlagFromTimer))
			r.u8(offOldState, 2)
			r.u8(offProbesOut, 3)
			r.u32(offSndWnd, 0)
			r.u32(offNotSent, 4096)
			return r
		}, func(t *testing.T, ev Event) {
			if ev.Kind.String() != "window_probe" || ev.ProbesBefore != 2 || ev.ProbesOut != 3 || ev.OldState != 0 ||
				ev.NotSent != 4096 || ev.SndWnd != 0 {
				t.Errorf("%+v", ev)
			}
		}},
		{"drop of a reply (IPv4, netfilter INPUT)", func() rawRecord {
			r := baseRecord(KindDrop)
			r.u16(offFlags, uint16(FlagDropIn))
			r.u32(offDetail, 12)
			r.u8(offNFHook, uint8(NFHookInput))
			r.u32(offDrops, 7)
			r.u32(offSndWnd, 65535)
			return r
		}, func(t *testing.T, ev Event) {
			if ev.Kind.String() != "drop" || ev.Flags != FlagDropIn || ev.Detail != 12 || ev.NFHook.String() != "INPUT" ||
				ev.Drops != 7 || ev.SndWnd != 65535 {
				t.Errorf("%+v", ev)
			}
		}},
		{"destroy", func() rawRecord { return baseRecord(KindDestroy) }, func(t *testing.T, ev Event) {
			if ev.Kind.String() != "destroy" {
				t.Errorf("kind %v", ev.Kind)
			}
		}},
		{"close from an exiting owner, orphaned", func() rawRecord {
			r := baseRecord(KindState)
			r.u8(offOldState, uint8(tcp.StateEstablished))
			r.u8(offState, uint8(tcp.StateFinWait1))
			r.u16(offFlags, uint16(FlagOwnerExiting|FlagOrphan|FlagFromTimer))
			r.u32(offExitCode, 9)
			r.u32(offInode, 123456)
			r.u8(offOwnerSource, uint8(OwnerClose))
			r.u8(offOrphanRetries, 2)
			r.u8(offSynLinear, 4)
			return r
		}, func(t *testing.T, ev Event) {
			if ev.Flags != FlagOwnerExiting|FlagOrphan|FlagFromTimer || ev.ExitSignal() != 9 || ev.ExitStatus() != 0 ||
				ev.Inode != 123456 || ev.Owner != OwnerClose || ev.Settings.OrphanRetries != 2 || ev.Settings.SynLinearTimeouts != 4 {
				t.Errorf("%+v", ev)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, decode(t, tc.build())) })
	}
}

// The thread's name is extra detail: absent when it is the process's
// (the leader acted, or a thread kept the process's name), else as the
// kernel wrote it.
func TestDecodeThread(t *testing.T) {
	r := baseRecord(KindState)
	if ev := decode(t, r); ev.Thread() != "" || ev.Comm() != "curl" {
		t.Errorf("leader: thread %q comm %q, want no thread, comm curl", ev.Thread(), ev.Comm())
	}
	copy(r[offThread:], "bio_aof_fsync\x00")
	ev := decode(t, r)
	if ev.Thread() != "bio_aof_fsync" || ev.Comm() != "curl" {
		t.Errorf("thread %q comm %q, want bio_aof_fsync of curl", ev.Thread(), ev.Comm())
	}
	if got := decode(t, Encode(&ev)); got.Thread() != "bio_aof_fsync" {
		t.Errorf("round trip: thread %q", got.Thread())
	}
	// The process's name written over a longer one leaves its tail after
	// the NUL: still the same name as the thread's.
	copy(r[offComm:], "redis-server-xyz")
	copy(r[offComm:], "redis\x00")
	copy(r[offThread:], "redis\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	if ev := decode(t, r); ev.Thread() != "" || ev.Comm() != "redis" {
		t.Errorf("comm %q thread %q, want redis and no thread", ev.Comm(), ev.Thread())
	}
}

// Recordings made before the record grew decode with the later fields
// zero: before thread (issue 17) and before snd_wnd (issue 19).
func TestDecodeOlderRecordings(t *testing.T) {
	r := baseRecord(KindState)
	for _, size := range []int{recordSizeBeforeThread, recordSizeBeforeWindow} {
		ev := decode(t, r[:size])
		if ev.PID != 4242 || ev.Comm() != "curl" || ev.Thread() != "" {
			t.Errorf("%d bytes: pid %d comm %q thread %q", size, ev.PID, ev.Comm(), ev.Thread())
		}
	}
}

func TestDecodeRejectsShortRecord(t *testing.T) {
	var ev Event
	err := Decode(make([]byte, wantRecordSize-1), Clock{}, &ev)
	if !errors.Is(err, ErrRecordSize) {
		t.Fatalf("got %v, want ErrRecordSize", err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	want := decode(t, baseRecord(KindRetransmit))
	got := decode(t, Encode(&want))
	if got != want {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestExitStatus(t *testing.T) {
	ev := Event{ExitCode: 3 << 8}
	if ev.ExitSignal() != 0 || ev.ExitStatus() != 3 {
		t.Errorf("signal %d status %d", ev.ExitSignal(), ev.ExitStatus())
	}
}

func BenchmarkDecode(b *testing.B) {
	raw := baseRecord(KindRetransmit)
	clock := NewClock(0, time.Now())
	var ev Event
	b.ReportAllocs()
	for b.Loop() {
		if err := Decode(raw, clock, &ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
}

// One OwnerSource for the kernel's sources and user space's, named as the
// JSON schema has them (owner_source).
func TestOwnerSourceNames(t *testing.T) {
	for s, want := range map[OwnerSource]string{OwnerUnknown: "", OwnerConnect: "connect", OwnerListen: "listen",
		OwnerClose: "close", OwnerProcfs: "procfs", OwnerListener: "listener", OwnerSource(200): "owner_source(200)"} {
		if got := s.String(); got != want {
			t.Errorf("OwnerSource(%d) = %q, want %q", s, got, want)
		}
	}
}

// A lifecycle record (--all: a socket's state changes summarised in the
// kernel) decodes with its steps and encodes back to the same bytes; one
// cut short of its steps is an error, not a record with no steps.
func TestLifecycleRecordRoundTrip(t *testing.T) {
	ev := Event{Mono: 5 * time.Second, Kind: KindLifecycle, Flags: FlagLifeDestroyed | FlagOrphan, Cookie: 77,
		Local: netip.MustParseAddrPort("[::1]:40000"), Remote: netip.MustParseAddrPort("[::1]:8080"), State: tcp.StateClose}
	ev.Life.Steps = 3
	ev.Life.Step[0] = LifeStep{Mono: 4 * time.Second, Old: tcp.StateClose, State: tcp.StateSynSent}
	ev.Life.Step[1] = LifeStep{Mono: 4*time.Second + time.Millisecond, Old: tcp.StateSynSent, State: tcp.StateEstablished}
	ev.Life.Step[2] = LifeStep{Mono: 5*time.Second - time.Microsecond, Old: tcp.StateEstablished, State: tcp.StateClose}
	raw := Encode(&ev)
	var got Event
	if err := Decode(raw, Clock{}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Life != ev.Life || got.Kind != KindLifecycle || got.Flags != ev.Flags || got.Local != ev.Local || got.Cookie != 77 {
		t.Errorf("decoded %+v, want %+v", got, ev)
	}
	if again := Encode(&got); !bytes.Equal(again, raw) {
		t.Error("encoding the decoded record gives other bytes")
	}
	if err := Decode(raw[:recordSize], Clock{}, &got); !errors.Is(err, ErrRecordSize) {
		t.Errorf("a lifecycle record without its steps: %v, want ErrRecordSize", err)
	}
	if KindLifecycle.String() != "lifecycle" {
		t.Errorf("KindLifecycle is %q", KindLifecycle)
	}
}

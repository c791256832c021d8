package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/exposure"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
)

// runExposure is `tcpwatch exposure`: one snapshot of every TCP
// connection, assessed from the settings each socket holds, worst first.
// The filters are watch mode's, decided on the resolved owner.
func runExposure(o *options, format output.Format, stdout, stderr io.Writer) error {
	host := o.fleet.hostName
	if host == "" {
		host, _ = os.Hostname()
	}
	var cgroups *containers.Resolver
	if mnt, err := containers.FindMount(); err == nil {
		cgroups = containers.NewResolver(mnt)
	} else if o.fleet.container != "" || o.fleet.cgroup != "" {
		return fmt.Errorf("--container/--cgroup: %w", err)
	}
	r, err := tracer.OpenSocketReader(false)
	if err != nil {
		return err
	}
	defer r.Close()
	socks, err := r.Read(o.netns)
	if err != nil {
		if len(socks) == 0 {
			return err
		}
		// Namespaces that vanished while being read are not a failure.
		fmt.Fprintf(stderr, "tcpwatch: warning: %v\n", err)
	}
	tracer.ResolveOwners(socks, cgroups)
	socks = filterExposure(socks, o)
	w := output.NewWriter(stdout, format, output.Options{Host: host})
	err = w.Exposure(exposure.Build(socks), time.Now())
	if errors.Is(err, output.ErrClosedOutput) {
		return nil
	}
	return err
}

// filterExposure keeps the sockets the watch-mode filters would keep.
func filterExposure(socks []exposure.Socket, o *options) []exposure.Socket {
	cgroup := strings.TrimSuffix(o.fleet.cgroup, "/")
	if o.fleet.cgroup == "/" {
		cgroup = "/"
	}
	out := socks[:0]
	for _, s := range socks {
		switch {
		case o.pid != 0 && s.PID != o.pid:
		case o.comm != "" && s.Comm != o.comm:
		case o.port != 0 && s.Local.Port() != o.port && s.Remote.Port() != o.port:
		case o.addr.IsValid() && !o.addr.Contains(s.Local.Addr()) && !o.addr.Contains(s.Remote.Addr()):
		case o.fleet.container != "" && !strings.HasPrefix(s.Container.ID, o.fleet.container):
		case cgroup != "" && (s.Container.Path == "" || !strings.HasPrefix(s.Container.Path, cgroup)):
		default:
			out = append(out, s)
		}
	}
	return out
}

// exposureWatch takes an exposure snapshot every interval while watch mode
// runs (--exposure-every): a gauge per process name and class for
// Prometheus, and the last counts for the stats record. One snapshot costs
// a walk of every socket table and of /proc/*/fd, nothing per packet.
type exposureWatch struct {
	reader  *tracer.SocketReader
	owned   bool // reader is this watch's own, to close
	o       *options
	cgroups *containers.Resolver
	publish func(map[string]exposure.Tally) // nil without --metrics
	warn    func(error)

	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	tally  *exposure.Tally
	byComm map[string]exposure.Tally
}

// openExposureWatch reads with shared if not nil (close_wait_stuck's
// iterator), else loads its own; loading must run while tcpwatch still
// holds CAP_BPF. Reading it later needs none.
func openExposureWatch(o *options, shared *tracer.SocketReader, cgroups *containers.Resolver, publish func(map[string]exposure.Tally), warn func(error)) (*exposureWatch, error) {
	x := &exposureWatch{reader: shared, o: o, cgroups: cgroups, publish: publish, warn: warn}
	if shared == nil {
		r, err := tracer.OpenSocketReader(true)
		if err != nil {
			return nil, err
		}
		x.reader, x.owned = r, true
	}
	return x, nil
}

// start snapshots at once and then every interval, until ctx ends or close.
func (x *exposureWatch) start(ctx context.Context, every time.Duration) {
	ctx, x.cancel = context.WithCancel(ctx)
	x.done = make(chan struct{})
	go func() {
		defer close(x.done)
		x.run(ctx, every)
	}()
}

func (x *exposureWatch) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	warned := false
	for {
		if err := x.snapshot(); err != nil && !warned {
			x.warn(fmt.Errorf("exposure snapshot: %w", err))
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (x *exposureWatch) snapshot() error {
	socks, err := x.reader.Read(x.o.netns)
	if len(socks) == 0 && err != nil {
		return err
	}
	tracer.ResolveOwners(socks, x.cgroups)
	r := exposure.Build(filterExposure(socks, x.o))
	byComm := map[string]exposure.Tally{}
	for _, p := range r.ByProcess {
		comm := p.Comm
		if p.PID == 0 {
			comm = "(no process)"
		}
		t := byComm[comm]
		for c := range t {
			t[c] += p.Tally[c]
		}
		byComm[comm] = t
	}
	x.mu.Lock()
	x.tally, x.byComm = &r.Tally, byComm
	x.mu.Unlock()
	// A snapshot is large and rare: give its memory back now rather than
	// let the heap keep it between snapshots.
	debug.FreeOSMemory()
	if x.publish != nil {
		x.publish(byComm)
	}
	return err
}

// stats gives the stats record the last snapshot's counts.
func (x *exposureWatch) stats(w *output.Writer) {
	if x == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.tally == nil {
		return
	}
	byComm := map[string]map[string]int{}
	for comm, t := range x.byComm {
		byComm[comm] = classCounts(t)
	}
	w.SetExposure(classCounts(*x.tally), byComm)
}

func classCounts(t exposure.Tally) map[string]int {
	m := map[string]int{}
	for _, c := range exposure.Classes {
		m[c.String()] = t[c]
	}
	return m
}

func (x *exposureWatch) close() {
	if x == nil {
		return
	}
	if x.cancel != nil {
		x.cancel()
		<-x.done
	}
	if x.owned {
		x.reader.Close()
	}
}

// socketKeepalive reads each socket's own keepalive interval and count in
// a namespace through the socket iterator, for the incidents' shared fate:
// sock_diag shows only the namespace's (Go's 15 s interval would be taken
// for 75 s). nil without the iterator.
func socketKeepalive(r *tracer.SocketReader) func(uint32) (map[uint64]incident.SocketKeepalive, error) {
	if r == nil {
		return nil
	}
	return func(netns uint32) (map[uint64]incident.SocketKeepalive, error) {
		socks, err := r.Read(netns)
		if err != nil && len(socks) == 0 {
			return nil, err
		}
		own := make(map[uint64]incident.SocketKeepalive, len(socks))
		for i := range socks {
			if st := &socks[i].Settings; st.Keepalive {
				own[socks[i].Cookie] = incident.SocketKeepalive{Intvl: st.KeepaliveIntvl, Probes: st.KeepaliveCount}
			}
		}
		return own, nil
	}
}

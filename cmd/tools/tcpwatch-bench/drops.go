package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/lab/netlab"
)

// dropRate is the drop storm's target: packets dropped per second.
const dropRate = 100000

// dropStormFor is how long each round's storm lasts.
const dropStormFor = 5 * time.Second

// benchDrops is the drop storm: a namespace of the harness drops dropRate
// UDP packets a second in its own OUTPUT chain (nftables), traffic that
// belongs to no TCP connection, so every one of them runs tcpwatch's drop
// program (skb:kfree_skb) and is discarded there. Measured with nothing
// in trouble (the gate: nothing marked for 240 s) and with one loopback
// connection of the same namespace in trouble on another port (the port
// prefilter), beside the floor's empty program on the same tracepoint.
func benchDrops(ctx context.Context, c config, rep *report) error {
	l, err := netlab.New()
	if err != nil {
		return err
	}
	defer l.Close()
	h, err := l.AddHost("d")
	if err != nil {
		return err
	}
	sink := netip.MustParseAddr("127.0.0.2")
	if _, err := h.DropTo(sink); err != nil {
		return err
	}
	var fd int
	if err := h.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		return err
	}
	defer unix.Close(fd)
	storm := func() (sent uint64, elapsed time.Duration) {
		to := &unix.SockaddrInet4{Port: 9, Addr: sink.As4()}
		payload := make([]byte, 32)
		var n atomic.Uint64
		start := time.Now()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for time.Since(start) < dropStormFor && ctx.Err() == nil {
			<-tick.C
			due := uint64(time.Since(start).Seconds() * dropRate)
			for n.Load() < due {
				unix.Sendto(fd, payload, 0, to) // EPERM: the OUTPUT chain dropped it
				n.Add(1)
			}
		}
		return n.Load(), time.Since(start)
	}
	for round := 0; round < c.rounds; round++ {
		for _, shape := range []struct {
			t       tracer
			trouble bool
			name    string
		}{
			{floorTracer, false, dropsFloor},
			{tcpwatchDefault, false, "tcpwatch, nothing in trouble"},
			{tcpwatchDefault, true, "tcpwatch, one connection in trouble (another port)"},
		} {
			fmt.Fprintf(os.Stderr, "drops round %d: %s\n", round+1, shape.name)
			r, err := shape.t.start(ctx, c, false)
			if err != nil {
				return err
			}
			var undo func()
			if shape.trouble {
				if undo, err = troubledConnection(ctx, h); err != nil {
					r.stop()
					return err
				}
			}
			before, _ := r.sample()
			sent, elapsed := storm()
			after, _ := r.sample()
			if undo != nil {
				undo()
			}
			r.stop()
			d := after.sub(before)
			dropNs, dropRuns := d.only("drop")
			all, _ := d.totalBPF()
			dr := rep.dropsFor(shape.name)
			dr.sentPerS = append(dr.sentPerS, float64(sent)/elapsed.Seconds())
			dr.runsPerS = append(dr.runsPerS, float64(dropRuns)/elapsed.Seconds())
			if dropRuns > 0 {
				dr.nsPerDrop = append(dr.nsPerDrop, float64(dropNs)/float64(dropRuns))
			}
			dr.cpuPct = append(dr.cpuPct, float64(all+d.procNs)/float64(elapsed.Nanoseconds())*100)
			if err := sleepCtx(ctx, 300*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// troubledConnection makes a loopback connection in h whose segments h's
// own prerouting chain drops (netlab's DropPort), and writes to it until
// its first RTO has been retransmitted: the kernel half then has a
// connection in trouble, and every drop on the machine passes the gate.
// undo closes it and removes the rule.
func troubledConnection(ctx context.Context, h *netlab.Host) (undo func(), err error) {
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		return nil, err
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		if s, err := ln.Accept(); err == nil {
			accepted <- s
		}
	}()
	var c net.Conn
	if err := h.Do(func() (err error) { c, err = net.Dial("tcp", ln.Addr().String()); return err }); err != nil {
		ln.Close()
		return nil, err
	}
	s := <-accepted
	go io.Copy(io.Discard, s)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	undoRule, err := h.DropPort(port)
	if err != nil {
		c.Close()
		s.Close()
		ln.Close()
		return nil, err
	}
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		return nil, err
	}
	// The first RTO on loopback is 200 ms (TCP_RTO_MIN); by a second its
	// retransmission has marked the connection in trouble.
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	return func() {
		undoRule()
		c.Close()
		s.Close()
		ln.Close()
	}, nil
}

type dropsResult struct {
	name                                  string
	sentPerS, runsPerS, nsPerDrop, cpuPct []float64
}

// dropsFloor names the floor's row of the drop storm.
const dropsFloor = "floor (empty program)"

package tracker

import (
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Drop counts the packets of one connection that this host dropped for
// one reason, in one direction, during its episode.
type Drop struct {
	// Inbound: a packet from the peer (an answer that died here); else
	// one this side sent (a retransmission or probe that never left).
	Inbound bool
	// Reason as the kernel names it (enum skb_drop_reason without its
	// prefix): NETFILTER_DROP, NEIGH_FAILED, IP_OUTNOROUTES, ...
	Reason string
	// Hook is the netfilter hook of a NETFILTER_DROP (OUTPUT, INPUT,
	// PREROUTING, POSTROUTING), inferred from the packet's state; "" for
	// other reasons.
	Hook string
	// Elsewhere: the packet died in another network namespace of this
	// kernel than the connection's (a bridge, a veth peer, the node's
	// own firewall for a container): it left the connection's host.
	Elsewhere bool
	// Site names the kernel function that freed the packet when it, not
	// the reason, says why: "inet6_csk_xmit" (the IPv6 route lookup
	// failed; the kernel gives that drop no reason, NOT_SPECIFIED).
	Site  string
	Count int
}

// SiteNoRoute6 is Drop.Site of a segment whose IPv6 route lookup failed.
const SiteNoRoute6 = "inet6_csk_xmit"

// Direction is "in" or "out", as the JSON says it.
func (d Drop) Direction() string {
	if d.Inbound {
		return "in"
	}
	return "out"
}

// DropFacts say where an episode's packets died: counted on this host's
// drop path (skb:kfree_skb), joined to the connection by the kernel.
type DropFacts struct {
	// DropsSeen: the kernel's drop path is watched (kfree_skb attached),
	// so Drops and LeftHost are facts; without it both stay empty.
	DropsSeen bool
	Drops     []Drop
	// LeftHost is how many of the episode's retransmissions or probes
	// left this host: those sent minus those dropped here on the way out.
	LeftHost int
	// Unjoined: while the connection was tracked the kernel refused to
	// mark some connection in trouble, its table of them being full
	// (stats.skipped.troubled_full): this one's drops may not all have
	// been joined to it, so DropsSeen is false and none is claimed.
	Unjoined bool
}

// DroppedOut and DroppedIn total the drops of each direction in the
// connection's own host (namespace); DroppedElsewhere those of this
// kernel's other namespaces.
func (f *DropFacts) DroppedOut() int       { return f.dropped(false, false) }
func (f *DropFacts) DroppedIn() int        { return f.dropped(true, false) }
func (f *DropFacts) DroppedElsewhere() int { return f.dropped(false, true) + f.dropped(true, true) }

func (f *DropFacts) dropped(in, elsewhere bool) int {
	n := 0
	for _, d := range f.Drops {
		if d.Inbound == in && d.Elsewhere == elsewhere {
			n += d.Count
		}
	}
	return n
}

// dropKind is one kind of drop as the kernel reports it.
type dropKind struct {
	inbound, elsewhere bool
	noRoute6           bool
	reason             int32
	hook               wire.NFHook
}

// connDrops are a connection's drops since its episode began.
type connDrops struct {
	kinds  []dropKind
	counts []int
}

// maxDropKinds bounds the kinds kept per connection: an episode sees one
// or two (the firewall, the neighbour).
const maxDropKinds = 8

func (d *connDrops) add(k dropKind, n int) {
	for i := range d.kinds {
		if d.kinds[i] == k {
			d.counts[i] += n
			return
		}
	}
	if len(d.kinds) < maxDropKinds {
		d.kinds = append(d.kinds, k)
		d.counts = append(d.counts, n)
	}
}

func (d *connDrops) reset() { d.kinds, d.counts = d.kinds[:0], d.counts[:0] }

// onDrop counts a drop record: the kernel sends them only for connections
// in trouble. The record carries the 4-tuple and cookie, none of the
// socket's figures, so it changes nothing else about the connection.
func (t *Tracker) onDrop(ev *wire.Event) {
	c := t.lookup(ev)
	if c == nil || c.done {
		return
	}
	if c.firstMono == ev.Mono && !c.local.IsValid() {
		c.local, c.remote = ev.Local, ev.Remote
	}
	n := int(ev.Drops)
	if n == 0 {
		n = 1
	}
	c.drops.add(dropKind{inbound: ev.Flags&wire.FlagDropIn != 0, elsewhere: ev.Flags&wire.FlagDropElsewhere != 0,
		noRoute6: ev.Flags&wire.FlagDropNoRoute6 != 0, reason: ev.Detail, hook: ev.NFHook}, n)
}

// dropFacts fills n's drop facts from the connection's episode: sent is
// how many retransmissions or probes the episode sent.
func (t *Tracker) dropFacts(c *conn, n *Narrative) {
	n.DropsSeen, n.Unjoined = t.cfg.DropsSeen, false
	if n.DropsSeen && c.unjoined != t.unjoined {
		n.DropsSeen, n.Unjoined = false, true
	}
	if !n.DropsSeen {
		return
	}
	n.Drops = nil
	for i, k := range c.drops.kinds {
		reason := t.cfg.DropReasons.Name(k.reason)
		d := Drop{Inbound: k.inbound, Elsewhere: k.elsewhere, Reason: reason, Count: c.drops.counts[i]}
		if reason == "NETFILTER_DROP" {
			d.Hook = k.hook.String()
		}
		if k.noRoute6 {
			d.Site = SiteNoRoute6
		}
		n.Drops = append(n.Drops, d)
	}
	// A retransmission that failed here never reached the stack below.
	sent := n.Retransmits - n.FailedSends
	if n.WindowProbes > 0 {
		sent = n.WindowProbes
	}
	n.LeftHost = max(sent-n.DroppedOut(), 0)
}

// DropsUnjoined tells the tracker that the kernel could not mark a
// connection in trouble (its table of them was full): the drops of the
// connections tracked now may not all be joined to them.
func (t *Tracker) DropsUnjoined() { t.unjoined++ }

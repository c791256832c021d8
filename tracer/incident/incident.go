// Package incident tells one story per failing peer. It is fed the
// tracker's narratives (never kernel records: a healthy connection costs
// it nothing) and groups the connections in trouble with one remote
// address of one network namespace into an incident: an id, an onset, the
// connections and their owners, the verdict mix, the projected give-ups,
// and how it ended. A lone connection is an incident of one and is told as
// it is today; from the second connection on, the incident speaks for its
// connections and their own lines can be folded into it.
//
// It also decides, per narrative, whether the narrative is news: a
// connection's repeated stalled narratives are news only when something
// changed (the first, a new RTO class, a moved give-up, the end).
package incident

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// Config tunes the grouping and how often an incident speaks.
type Config struct {
	// Settle is how long an incident stays open after its last connection's
	// trouble ended: trouble with the same peer meanwhile joins it, and
	// only then is it closed. 0 means DefaultSettle.
	Settle time.Duration
	// Gather is how long an incident waits, once a second connection
	// joined, before it tells its onset: the connections failing together
	// arrive within it, so the first line already counts them. 0 means
	// DefaultGather.
	Gather time.Duration
	// UpdateEvery bounds how often an open incident is told again; it is
	// told again only when something changed class. 0 means
	// DefaultUpdateEvery.
	UpdateEvery time.Duration
	// MaxConns bounds the connections followed at once (0: DefaultMaxConns);
	// beyond it a narrative is told as a lone connection's and counted
	// (Stats.Overflow).
	MaxConns int
	// ID prefixes incident ids (default: random, so that ids from two runs
	// or two hosts do not collide).
	ID string
}

// Defaults of Config.
const (
	DefaultSettle      = 5 * time.Second
	DefaultGather      = time.Second
	DefaultUpdateEvery = 10 * time.Second
	DefaultMaxConns    = 1 << 18
)

// Phase is where an incident is in its life.
type Phase string

const (
	Open   Phase = "open"   // two or more connections to the peer are in trouble
	Update Phase = "update" // something changed class since it was last told
	Close  Phase = "close"  // no connection has been in trouble for Config.Settle
)

// Outcome is how an incident ended.
type Outcome string

const (
	Recovered Outcome = "recovered" // every connection recovered (the peer answered)
	Fatal     Outcome = "fatal"     // every connection died
	Mixed     Outcome = "mixed"     // some recovered, some died
	// Unfinished: tcpwatch stopped while connections were still in trouble.
	Unfinished Outcome = "unfinished"
)

// Change is a change of class that makes an open incident worth telling again.
type Change uint8

const (
	MoreConnections Change = 1 << iota // more connections joined
	FirstGiveUp                        // the first connection died
	FirstRecovery                      // the first connection recovered
	NewOwner                           // a process not named before
	NewVerdict                         // a verdict not seen before in it
	GiveUpMoves                        // a connection's projected give-up moved (GiveUpSlack)
)

var changeNames = []string{"connections", "first_giveup", "first_recovery", "new_owner", "new_verdict", "giveup_moved"}

// Names lists the changes by name, in a fixed order.
func (c Change) Names() []string {
	var out []string
	for i, name := range changeNames {
		if c&(1<<i) != 0 {
			out = append(out, name)
		}
	}
	return out
}

// News says why a narrative is worth telling in a record that counts every
// byte (JSON): a connection's later stalled narratives repeat the first
// with new figures and are news only when something changed.
type News uint8

const (
	Repeat      News = iota // nothing new: the same episode, the same class
	First                   // the first narrative of an episode, or of a connection
	RTOClass                // the RTO reached a new class (RTOClassOf)
	GiveUpMoved             // the projected give-up moved (GiveUpSlack)
	End                     // the connection recovered or is gone
	// ListenerMoved: a listener's episode changed verdict or cause, or
	// what it counts grew (the tracker tells it at most every 10 s).
	ListenerMoved
)

// Tag is what the model says about one narrative.
type Tag struct {
	// Incident is the id of the incident the connection is part of, once
	// that incident has two connections ("" for a lone connection); for
	// a listener, the id of its episode (Listener).
	Incident string
	// Listener: the narrative is a listener's (accept_queue_overflow,
	// synack_unanswered): one incident per listener and episode, told by
	// the listener's own narratives, never folded.
	Listener bool
	// News says whether, and why, the narrative is news (see News).
	News News
}

// Member says whether the connection is part of an incident of two or
// more: its lines can be folded into the incident's.
func (t Tag) Member() bool { return t.Incident != "" && !t.Listener }

// Owner is a process with connections in an incident.
type Owner struct {
	PID         uint32
	Comm        string
	Container   string // container id, "" for a host process
	Connections int
}

// Incident is an incident as told: a snapshot, owned by the receiver.
type Incident struct {
	ID    string
	Phase Phase
	// Time is when this was told; Onset the first connection's first
	// sign of trouble; Ended when the last connection's trouble ended
	// (zero while some are in trouble).
	Time, Onset, Ended time.Time
	NetNS              uint32
	Peer               netip.Addr
	// Port is the peer's port when every connection shares it, else 0.
	Port uint16

	Connections int // connections that were in trouble in it, in all
	InTrouble   int // stalled or keepalive_probing now
	Recovered   int // whose trouble ended with the connection alive
	Failed      int // that died of it (a final failure verdict)
	// Verdicts counts the connections by their latest verdict.
	Verdicts map[tracker.Verdict]int
	// Errnos counts the errors the applications saw (the dead ones').
	Errnos map[int32]int
	// Owners are the processes, most connections first.
	Owners []Owner
	// Retransmissions and probes sent into the silence, summed over the
	// connections (their latest figures), and the retransmissions that
	// never left this host.
	Retransmits, Probes, FailedSends int
	// RTOMin and RTOMax span the latest RTO of the connections stalled now.
	RTOMin, RTOMax time.Duration
	// GiveUpFirst and GiveUpLast span the projected give-ups of the
	// connections in trouble now (zero when none is projected).
	GiveUpFirst, GiveUpLast time.Time
	// FirstFailure and LastFailure are when connections died of it.
	FirstFailure, LastFailure time.Time
	// Outage is from the onset to Ended, or to Time while it goes on.
	Outage time.Duration
	// Joined lists the connections that joined since the incident was
	// last told (at Open: all so far), so that a record that counts bytes
	// need not tell each one's first narrative.
	Joined []Joined
	// Changes says why an update is told.
	Changes Change
	// Outcome is set at Close.
	Outcome Outcome
	// Examples holds one narrative per verdict not yet given in an earlier
	// record of this incident: its explanation stands for every
	// connection with that verdict.
	Examples []*tracker.Narrative
	// SharedFate is filled by whoever can read the kernel's socket table
	// (the stage): the model only sees connections in trouble.
	SharedFate *SharedFate
}

// Joined is a connection as it joined an incident.
type Joined struct {
	Cookie        uint64
	Local, Remote netip.AddrPort
	PID           uint32
	Verdict       tracker.Verdict
	// Onset is its first sign of trouble; GiveUp its projected give-up
	// when it joined (zero if none).
	Onset, GiveUp time.Time
}

// SharedFate is what an incident's peer means for the idle connections to
// it: they share its fate, but cannot notice until their kernels do.
type SharedFate struct {
	// Idle connections to the peer (ESTABLISHED, nothing in flight) that
	// are not in the incident, and their owners.
	Idle   int
	Owners []Owner
	// Keepalive have the keepalive timer armed: the first and the last of
	// them would give up on a silent peer at NoticeFirst and NoticeLast
	// (with KeepaliveProbes probes KeepaliveIntvl apart).
	Keepalive               int
	NoticeFirst, NoticeLast time.Time
	KeepaliveProbes         uint8
	KeepaliveIntvl          time.Duration
	// Never have no keepalive: their kernels never notice until they send.
	Never int
	// Source says where the figures come from (a sentence).
	Source string
}

// Stats count what the model did.
type Stats struct {
	Incidents map[Outcome]int // incidents of two or more closed, by outcome
	Open      int             // incidents of two or more open now
	Overflow  uint64          // narratives told alone: MaxConns reached
}

// Key is a peer: one remote address in one network namespace.
type Key struct {
	NetNS uint32
	Addr  netip.Addr
}

type connKey struct {
	netns         uint32
	local, remote netip.AddrPort
}

type cookieKey struct {
	netns  uint32
	cookie uint64
}

type memberState uint8

const (
	inTrouble memberState = iota
	recovered
	failed
)

type member struct {
	inc       *incident
	cookie    cookieKey
	local     netip.AddrPort
	remote    netip.AddrPort
	state     memberState
	verdict   tracker.Verdict
	owner     Owner
	rto       time.Duration
	rtoMax    time.Duration
	giveUpAt  time.Duration // kernel time of the projected give-up, 0 if none
	retrans   int
	probes    int
	failedTx  int
	errno     int32
	told      bool // a narrative of its current episode was news
	toldClass int
	toldAt    time.Duration // the projected give-up last told
}

type incident struct {
	id      string
	key     Key
	members map[connKey]*member // followed now
	gone    goneSum             // the connections gone, still counted
	onset   time.Duration
	// troubleEnded is when the count in trouble last fell to zero.
	troubleEnded time.Duration
	inTrouble    int
	port         uint16
	portShared   bool

	openDue   time.Duration // when the gathered onset is told (0: not yet due)
	announced bool
	lastTold  time.Duration
	changes   Change
	owners    map[uint32]bool
	verdicts  map[tracker.Verdict]bool
	examples  map[tracker.Verdict]*tracker.Narrative
	explained map[tracker.Verdict]bool
	joined    []Joined // since the incident was last told
	anyFailed bool
	anyHealed bool
	firstFail time.Duration
	lastFail  time.Duration
	everTwo   bool
}

// Model groups narratives into incidents. It is not safe for concurrent
// use: one goroutine feeds it narratives in time order.
type Model struct {
	cfg     Config
	report  func(*Incident)
	byPeer  map[Key]*incident
	byConn  map[connKey]*member
	cookies map[cookieKey]*member // the same, by socket cookie
	// listeners: each listener's episode (keyed by the listener, not by
	// a peer: its clients may be anywhere).
	listeners map[listenerKey]*listenerEpisode
	now       time.Duration
	lastSweep time.Duration
	seq       uint64
	stats     Stats
	// wall turns kernel time into wall time (from the narratives).
	wallAtZero time.Time
}

// New returns a model that calls report for every incident record told
// (Open, Update, Close) of an incident of two or more; the record is the
// receiver's to keep.
func New(cfg Config, report func(*Incident)) *Model {
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	if cfg.Gather <= 0 {
		cfg.Gather = DefaultGather
	}
	if cfg.UpdateEvery <= 0 {
		cfg.UpdateEvery = DefaultUpdateEvery
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.ID == "" {
		var b [3]byte
		_, _ = rand.Read(b[:])
		cfg.ID = hex.EncodeToString(b[:])
	}
	return &Model{cfg: cfg, report: report, byPeer: map[Key]*incident{}, byConn: map[connKey]*member{},
		cookies: map[cookieKey]*member{}, listeners: map[listenerKey]*listenerEpisode{}, stats: Stats{Incidents: map[Outcome]int{}}}
}

// Follows says whether the model follows the connection with this cookie
// in that namespace: it is in trouble or in an incident, not idle beside it.
func (m *Model) Follows(netns uint32, cookie uint64) bool {
	_, ok := m.cookies[cookieKey{netns, cookie}]
	return ok
}

// InTrouble calls fn with each told incident's id and its connections in
// trouble now (for a gauge between its records).
func (m *Model) InTrouble(fn func(id string, inTrouble int)) {
	for _, inc := range m.byPeer {
		if inc.announced {
			fn(inc.id, inc.inTrouble)
		}
	}
}

// Open is how many incidents the model holds now, lone connections'
// included: none on a healthy host.
func (m *Model) Open() int { return len(m.byPeer) }

// Stats reports what the model did so far.
func (m *Model) Stats() Stats {
	s := m.stats
	s.Incidents = make(map[Outcome]int, len(m.stats.Incidents))
	for k, v := range m.stats.Incidents {
		s.Incidents[k] = v
	}
	for _, inc := range m.byPeer {
		if inc.announced {
			s.Open++
		}
	}
	return s
}

// trouble says whether a verdict puts a connection in an incident: an
// episode of trouble (stalled, keepalive_probing, zero_window, and any
// episode the tracker adds but recovered), or an end that is a failure
// (every final verdict but the normal ends).
func trouble(v tracker.Verdict) bool {
	switch v {
	case tracker.Recovered, tracker.LocalClosed, tracker.PeerClosed:
		return false
	case tracker.CloseWaitStuck, tracker.LocalPortsExhausted:
		// A process's own doing (it keeps sockets, it ran out of ports),
		// told once per process and folded by the tracker: no peer's fate.
		return false
	}
	return true
}

// inEpisode says whether the verdict leaves the connection in trouble,
// alive.
func inEpisode(v tracker.Verdict) bool {
	return v.Episode() && v != tracker.Recovered
}

// grouped says whether a narrative is about a connection to a peer: a
// listener's (accept_queue_overflow) has no remote address to group by.
func grouped(n *tracker.Narrative) bool {
	a := n.Remote.Addr()
	return a.IsValid() && !a.IsUnspecified()
}

// RTOClassOf puts an RTO in a class: below a second, below ten seconds,
// below the maximum, at the maximum (the backoff stopped growing). A
// stalled connection's narrative is news when its class changes.
func RTOClassOf(rto, rtoMax time.Duration) int {
	switch {
	case rto < time.Second:
		return 0
	case rto < 10*time.Second:
		return 1
	case rtoMax > 0 && rto >= rtoMax:
		return 3
	}
	return 2
}

// GiveUpSlack is how far a projected give-up may move before the move is
// news: the kernel's timers fire late by up to an eighth of their length
// (the timer wheel's granularity), which moves every projection a little.
func GiveUpSlack(left time.Duration) time.Duration {
	return max(2*time.Second, left/8)
}

// Observe takes one narrative (as the tracker tells it, after the
// filters) and the container of its connection ("" for a host process),
// and says how it stands. n is not kept.
func (m *Model) Observe(n *tracker.Narrative, container string) Tag {
	if !n.Time.IsZero() {
		m.wallAtZero = n.Time.Add(-n.Mono)
	}
	m.advance(n.Mono)
	if n.State == tcp.StateListen && !grouped(n) {
		return m.observeListener(n)
	}
	ck := connKey{n.NetNS, n.Local, n.Remote}
	var mb *member
	if len(m.byConn) > 0 { // with --all, every normal end comes here: most find none to look in
		mb = m.byConn[ck]
	}
	if mb == nil {
		if !trouble(n.Verdict) || !grouped(n) {
			return Tag{News: newsOfLone(n)}
		}
		if len(m.byConn) >= m.cfg.MaxConns {
			m.stats.Overflow++
			return Tag{News: newsOfLone(n)}
		}
		mb = m.join(ck, n)
	}
	inc := mb.inc
	news := m.update(inc, mb, n, container)
	tag := Tag{News: news}
	if inc.everTwo {
		tag.Incident = inc.id
	}
	return tag
}

// newsOfLone is the news of a narrative about a connection the model does
// not follow (a normal end, or one beyond MaxConns).
func newsOfLone(n *tracker.Narrative) News {
	if n.Verdict.Episode() && !n.Final && n.Verdict != tracker.Recovered {
		return First
	}
	return End
}

func (m *Model) join(ck connKey, n *tracker.Narrative) *member {
	key := Key{n.NetNS, n.Remote.Addr().Unmap()}
	inc := m.byPeer[key]
	if inc == nil {
		m.seq++
		inc = &incident{id: m.cfg.ID + "-" + strconv.FormatUint(m.seq, 10), key: key, members: map[connKey]*member{},
			onset: onsetOf(n), port: n.Remote.Port(), portShared: true, owners: map[uint32]bool{},
			verdicts: map[tracker.Verdict]bool{}, examples: map[tracker.Verdict]*tracker.Narrative{},
			explained: map[tracker.Verdict]bool{}}
		m.byPeer[key] = inc
	}
	mb := &member{inc: inc, cookie: cookieKey{n.NetNS, n.Cookie}, local: n.Local, remote: n.Remote}
	inc.members[ck] = mb
	m.byConn[ck] = mb
	if n.Cookie != 0 {
		m.cookies[mb.cookie] = mb
	}
	inc.onset = min(inc.onset, onsetOf(n))
	if inc.port != n.Remote.Port() {
		inc.portShared = false
	}
	inc.inTrouble++ // update() moves it to its real state
	j := Joined{Cookie: n.Cookie, Local: n.Local, Remote: n.Remote, PID: n.Owner.PID, Verdict: n.Verdict,
		Onset: n.Time.Add(-(n.Mono - onsetOf(n)))}
	if n.GiveUpIn > 0 {
		j.GiveUp = n.Time.Add(n.GiveUpIn)
	}
	inc.joined = append(inc.joined, j)
	mb.state = inTrouble
	// Gone connections count: a burst of refused or timed-out connects
	// is told one final narrative each.
	if len(inc.members)+inc.gone.n >= 2 {
		if !inc.everTwo {
			inc.everTwo = true
			inc.openDue = m.now + m.cfg.Gather
		}
		inc.changes |= MoreConnections
	}
	return mb
}

// onsetOf is a narrative's first sign of trouble, in kernel time.
func onsetOf(n *tracker.Narrative) time.Duration {
	if n.Outage > 0 && n.Outage < n.Mono {
		return n.Mono - n.Outage
	}
	return n.Mono
}

// update applies n to its connection and incident, and says whether it is news.
func (m *Model) update(inc *incident, mb *member, n *tracker.Narrative, container string) News {
	was := mb.state
	mb.verdict = n.Verdict
	owner := Owner{PID: n.Owner.PID, Comm: n.Owner.Comm, Container: container}
	if owner.PID != mb.owner.PID || mb.owner.Comm == "" {
		mb.owner = owner
	}
	if !inc.owners[owner.PID] {
		inc.owners[owner.PID] = true
		if len(inc.owners) > 1 {
			inc.changes |= NewOwner
		}
	}
	if !inc.verdicts[n.Verdict] {
		inc.verdicts[n.Verdict] = true
		if len(inc.verdicts) > 1 {
			inc.changes |= NewVerdict
		}
	}
	if _, ok := inc.examples[n.Verdict]; !ok && !inc.explained[n.Verdict] {
		inc.examples[n.Verdict] = copyNarrative(n)
	}
	mb.retrans, mb.probes, mb.failedTx = n.Retransmits, n.Probes, n.FailedSends
	if len(n.RTOs) > 0 {
		mb.rto = n.RTOs[len(n.RTOs)-1]
	}
	mb.rtoMax = n.RTOMax
	mb.giveUpAt = 0
	if n.GiveUpIn > 0 {
		mb.giveUpAt = n.Mono + n.GiveUpIn
	}

	var state memberState
	switch {
	case inEpisode(n.Verdict):
		state = inTrouble
	case trouble(n.Verdict):
		state = failed
		mb.errno = n.Errno
	default:
		state = recovered
	}
	if was == inTrouble && state != inTrouble {
		inc.inTrouble--
		if inc.inTrouble == 0 {
			inc.troubleEnded = n.Mono
		}
	} else if was != inTrouble && state == inTrouble {
		inc.inTrouble++
	}
	mb.state = state
	switch state {
	case failed:
		if !inc.anyFailed {
			inc.anyFailed, inc.firstFail = true, n.Mono
			if inc.everTwo {
				inc.changes |= FirstGiveUp
			}
		}
		inc.lastFail = n.Mono
	case recovered:
		if !inc.anyHealed && inc.everTwo {
			inc.changes |= FirstRecovery
		}
		inc.anyHealed = true
	}

	// Is it news?
	if state != inTrouble {
		if n.Final {
			m.forget(mb, connKey{n.NetNS, n.Local, n.Remote})
		}
		return End
	}
	class := -1
	if n.Verdict == tracker.Stalled {
		class = RTOClassOf(mb.rto, mb.rtoMax)
	}
	switch {
	case n.Begins || was != inTrouble || !mb.told:
		mb.told, mb.toldClass, mb.toldAt = true, class, mb.giveUpAt
		return First
	case mb.giveUpAt != 0 && mb.toldAt != 0 && absDur(mb.giveUpAt-mb.toldAt) > GiveUpSlack(mb.giveUpAt-n.Mono):
		mb.toldClass, mb.toldAt = class, mb.giveUpAt
		if inc.everTwo {
			// The incident tells the span of its connections' give-ups.
			inc.changes |= GiveUpMoves
			return Repeat
		}
		return GiveUpMoved
	case class != mb.toldClass && !inc.everTwo:
		// In an incident, the RTO's class is the incident's to tell (its
		// rto span): every connection moves together.
		mb.toldClass = class
		return RTOClass
	}
	return Repeat
}

// goneSum sums up the connections of an incident that are gone: an
// incident that lasts hours under a stream of failing connects keeps
// counts, not every connection.
type goneSum struct {
	n, retrans, probes, failedTx, recovered, failed int
	verdicts                                        map[tracker.Verdict]int
	errnos                                          map[int32]int
	owners                                          map[uint32]Owner
}

func (g *goneSum) add(mb *member) {
	if g.verdicts == nil {
		g.verdicts, g.errnos, g.owners = map[tracker.Verdict]int{}, map[int32]int{}, map[uint32]Owner{}
	}
	g.n++
	g.retrans += mb.retrans
	g.probes += mb.probes
	g.failedTx += mb.failedTx
	g.verdicts[mb.verdict]++
	switch mb.state {
	case recovered:
		g.recovered++
	case failed:
		g.failed++
		if mb.errno != 0 {
			g.errnos[mb.errno]++
		}
	}
	o := g.owners[mb.owner.PID]
	if o.Connections == 0 {
		o = Owner{PID: mb.owner.PID, Comm: mb.owner.Comm, Container: mb.owner.Container}
	}
	o.Connections++
	g.owners[mb.owner.PID] = o
}

// forget stops following a connection that is gone: it still counts in
// its incident, but a later connection on the same 4-tuple is new.
func (m *Model) forget(mb *member, ck connKey) {
	m.unfollow(ck, mb)
	if mb.inc.members[ck] == mb {
		delete(mb.inc.members, ck)
	}
	mb.inc.gone.add(mb)
}

func (m *Model) unfollow(ck connKey, mb *member) {
	if m.byConn[ck] == mb {
		delete(m.byConn, ck)
	}
	if m.cookies[mb.cookie] == mb {
		delete(m.cookies, mb.cookie)
	}
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func copyNarrative(n *tracker.Narrative) *tracker.Narrative {
	c := *n
	c.RTOs = slices.Clone(n.RTOs)
	c.Timeline = slices.Clone(n.Timeline)
	return &c
}

// Tick tells the model the time when no narrative comes, so that
// incidents open, update and close on time.
func (m *Model) Tick(mono time.Duration) { m.advance(mono) }

// sweepEvery bounds how often the open incidents are looked at.
const sweepEvery = 100 * time.Millisecond

func (m *Model) advance(mono time.Duration) {
	if mono > m.now {
		m.now = mono
	}
	if m.now-m.lastSweep < sweepEvery && m.lastSweep != 0 {
		return
	}
	m.lastSweep = m.now
	for _, inc := range m.byPeer {
		m.step(inc, false)
	}
}

// step tells what is due of one incident.
func (m *Model) step(inc *incident, ending bool) {
	now := m.now
	settled := inc.inTrouble == 0 && now-inc.troubleEnded >= m.cfg.Settle
	switch {
	case !inc.announced && inc.everTwo && (now >= inc.openDue || settled || ending):
		inc.announced = true
		m.tell(inc, Open)
	case inc.announced && inc.changes != 0 && now-inc.lastTold >= m.cfg.UpdateEvery && !settled && !ending:
		m.tell(inc, Update)
	}
	if settled || ending {
		if inc.announced {
			m.tell(inc, Close)
		}
		m.drop(inc)
	}
}

// Flush tells the end of every incident: tcpwatch stops.
func (m *Model) Flush(mono time.Duration) {
	m.advance(mono)
	m.now = max(m.now, mono)
	for _, inc := range m.byPeer {
		m.step(inc, true)
	}
}

func (m *Model) drop(inc *incident) {
	for ck, mb := range inc.members {
		m.unfollow(ck, mb)
	}
	delete(m.byPeer, inc.key)
}

func (m *Model) wall(mono time.Duration) time.Time {
	if mono == 0 || m.wallAtZero.IsZero() {
		return time.Time{}
	}
	return m.wallAtZero.Add(mono)
}

// tell builds the record of inc and reports it.
func (m *Model) tell(inc *incident, phase Phase) {
	r := m.build(inc, phase, nil)
	if phase == Close {
		m.stats.Incidents[r.Outcome]++
	}
	for _, v := range tracker.Verdicts {
		if ex, ok := inc.examples[v]; ok && r.Verdicts[v] > 0 {
			r.Examples = append(r.Examples, ex)
			delete(inc.examples, v)
			inc.explained[v] = true
		}
	}
	r.Joined, inc.joined = inc.joined, nil
	inc.changes = 0
	inc.lastTold = m.now
	m.report(r)
}

// build sums up inc as it is now; each member is also handed to each,
// when set.
func (m *Model) build(inc *incident, phase Phase, each func(*member)) *Incident {
	r := &Incident{ID: inc.id, Phase: phase, Time: m.wall(m.now), Onset: m.wall(inc.onset), NetNS: inc.key.NetNS,
		Peer: inc.key.Addr, Verdicts: map[tracker.Verdict]int{}, Errnos: map[int32]int{}, Changes: inc.changes}
	if phase == Open {
		r.Changes = 0
	}
	if inc.portShared {
		r.Port = inc.port
	}
	owners := map[uint32]*Owner{}
	var giveFirst, giveLast time.Duration
	count := func(mb *member) {
		if each != nil {
			each(mb)
		}
		r.Connections++
		r.Verdicts[mb.verdict]++
		r.Retransmits += mb.retrans
		r.Probes += mb.probes
		r.FailedSends += mb.failedTx
		switch mb.state {
		case inTrouble:
			r.InTrouble++
			if mb.giveUpAt != 0 {
				if giveFirst == 0 || mb.giveUpAt < giveFirst {
					giveFirst = mb.giveUpAt
				}
				giveLast = max(giveLast, mb.giveUpAt)
			}
			if mb.verdict == tracker.Stalled && mb.rto > 0 {
				if r.RTOMin == 0 || mb.rto < r.RTOMin {
					r.RTOMin = mb.rto
				}
				r.RTOMax = max(r.RTOMax, mb.rto)
			}
		case recovered:
			r.Recovered++
		case failed:
			r.Failed++
			if mb.errno != 0 {
				r.Errnos[mb.errno]++
			}
		}
		o := owners[mb.owner.PID]
		if o == nil {
			o = &Owner{PID: mb.owner.PID, Comm: mb.owner.Comm, Container: mb.owner.Container}
			owners[mb.owner.PID] = o
		}
		o.Connections++
	}
	for _, mb := range inc.members {
		count(mb)
	}
	g := &inc.gone
	r.Connections += g.n
	r.Retransmits += g.retrans
	r.Probes += g.probes
	r.FailedSends += g.failedTx
	r.Recovered += g.recovered
	r.Failed += g.failed
	for v, n := range g.verdicts {
		r.Verdicts[v] += n
	}
	for e, n := range g.errnos {
		r.Errnos[e] += n
	}
	for pid, o := range g.owners {
		if mine := owners[pid]; mine != nil {
			mine.Connections += o.Connections
		} else {
			o := o
			owners[pid] = &o
		}
	}
	for _, o := range owners {
		r.Owners = append(r.Owners, *o)
	}
	slices.SortFunc(r.Owners, func(a, b Owner) int {
		if a.Connections != b.Connections {
			return b.Connections - a.Connections
		}
		return int(a.PID) - int(b.PID)
	})
	r.GiveUpFirst, r.GiveUpLast = m.wall(giveFirst), m.wall(giveLast)
	if inc.anyFailed {
		r.FirstFailure, r.LastFailure = m.wall(inc.firstFail), m.wall(inc.lastFail)
	}
	end := m.now
	if inc.inTrouble == 0 && inc.troubleEnded != 0 {
		end = inc.troubleEnded
		if phase == Close {
			r.Ended = m.wall(end)
		}
	}
	r.Outage = max(end-inc.onset, 0)
	if phase == Close {
		switch {
		case r.InTrouble > 0:
			r.Outcome = Unfinished
		case r.Failed == 0:
			r.Outcome = Recovered
		case r.Recovered == 0:
			r.Outcome = Fatal
		default:
			r.Outcome = Mixed
		}
	}
	return r
}

// Live is an incident as it stands, with its connections: what a live
// view shows (Model.Live). Incident.Phase is Open for an incident told,
// "" for a lone connection's, not told.
type Live struct {
	Incident
	// Members are the connections followed now (the gone ones are only
	// counted), at most the number asked for; Followed says how many
	// there are.
	Members  []Member
	Followed int
}

// Member is one connection of an incident, as it stands.
type Member struct {
	Local, Remote netip.AddrPort
	PID           uint32
	Comm          string
	Verdict       tracker.Verdict
	Retransmits   int
	Probes        int
	RTO           time.Duration
	Errno         int32
	// GiveUp is its projected give-up while in trouble (zero if none).
	GiveUp time.Time
	// InTrouble: stalled or keepalive_probing now.
	InTrouble bool
}

// Live lists the incidents open now (lone connections in trouble too), in
// order of onset, with their connections: at most maxMembers each, those
// in trouble first, the earliest give-up first.
func (m *Model) Live(maxMembers int) []Live {
	out := make([]Live, 0, len(m.byPeer))
	for _, inc := range m.byPeer {
		phase := Phase("")
		if inc.announced {
			phase = Open
		}
		var members []Member
		r := m.build(inc, phase, func(mb *member) {
			members = append(members, Member{Local: mb.local, Remote: mb.remote, PID: mb.owner.PID, Comm: mb.owner.Comm,
				Verdict: mb.verdict, Retransmits: mb.retrans, Probes: mb.probes, RTO: mb.rto, Errno: mb.errno,
				GiveUp: m.wall(mb.giveUpAt), InTrouble: mb.state == inTrouble})
		})
		slices.SortFunc(members, func(a, b Member) int {
			switch {
			case a.InTrouble != b.InTrouble:
				if a.InTrouble {
					return -1
				}
				return 1
			case !a.GiveUp.Equal(b.GiveUp):
				if a.GiveUp.IsZero() {
					return 1
				}
				if b.GiveUp.IsZero() {
					return -1
				}
				return a.GiveUp.Compare(b.GiveUp)
			}
			return cmp.Compare(a.Local.Port(), b.Local.Port())
		})
		followed := len(members)
		if len(members) > maxMembers {
			members = members[:maxMembers]
		}
		out = append(out, Live{Incident: *r, Members: members, Followed: followed})
	}
	slices.SortFunc(out, func(a, b Live) int {
		if c := a.Onset.Compare(b.Onset); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}

// listenerKey is a listener: its namespace and local address.
type listenerKey struct {
	netns uint32
	local netip.AddrPort
}

// listenerEpisode is a listener's episode as last told.
type listenerEpisode struct {
	id      string
	verdict tracker.Verdict
	facts   tracker.ListenerFacts
	last    time.Duration
}

// listenerForget is how long after its last narrative a listener's
// episode is forgotten: the tracker tells an episode again at least every
// 10 s while it lasts, and begins a new one after 3 quiet readings.
const listenerForget = time.Minute

// observeListener gives a listener's narrative the id of its episode:
// one incident per listener and episode, whatever its clients' addresses.
func (m *Model) observeListener(n *tracker.Narrative) Tag {
	k := listenerKey{n.NetNS, n.Local}
	ep := m.listeners[k]
	for key, e := range m.listeners {
		if n.Mono-e.last > listenerForget {
			delete(m.listeners, key)
		}
	}
	if ep == nil || n.Begins || m.listeners[k] == nil {
		m.seq++
		ep = &listenerEpisode{id: m.cfg.ID + "-" + strconv.FormatUint(m.seq, 10), verdict: n.Verdict, facts: n.ListenerFacts, last: n.Mono}
		m.listeners[k] = ep
		return Tag{Incident: ep.id, Listener: true, News: First}
	}
	news := Repeat
	f, was := n.ListenerFacts, ep.facts
	if n.Verdict != ep.verdict || f.Cause != was.Cause || f.TurnedAway > was.TurnedAway ||
		f.SynackClients > was.SynackClients || f.SynackAcked > was.SynackAcked || f.CookiesSent > was.CookiesSent {
		news = ListenerMoved
	}
	ep.verdict, ep.facts, ep.last = n.Verdict, f, n.Mono
	return Tag{Incident: ep.id, Listener: true, News: news}
}

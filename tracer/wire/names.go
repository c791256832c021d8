package wire

// Names makes the strings of records' process names (Event.Comm),
// remembering the last few: under churn a handful of processes own every
// connection, and a name made anew for each connection was the one
// allocation the tracker made per record with --all. Not safe for
// concurrent use: one per reader.
type Names struct {
	raw  [namesKept][16]byte
	name [namesKept]string
	next int
}

const namesKept = 8

// Comm is e.Comm(), the string made the last time these bytes came when
// it is still remembered.
func (n *Names) Comm(e *Event) string {
	for i := range n.raw {
		if n.raw[i] == e.comm {
			return n.name[i]
		}
	}
	s := e.Comm()
	n.raw[n.next], n.name[n.next] = e.comm, s
	n.next = (n.next + 1) % namesKept
	return s
}

package output

import "github.com/tcpwatch/tcpwatch/tracer/engine"

var _ engine.Sink = (*Writer)(nil)

// Tell writes one item the engine tells (the Writer is the engine's last
// Sink); with Options.Batch it holds the line until Flush.
func (w *Writer) Tell(it *engine.Item) error {
	switch {
	case it.Narrative != nil:
		return w.Narrative(it.Narrative, it.Cgroup)
	case it.Notice != nil:
		return w.Notice(it.Notice, it.Cgroup)
	case it.Event != nil:
		return w.Event(it.Event, it.ResetReasons, it.Cgroup)
	case it.Incident != nil:
		return w.Incident(it.Incident)
	case it.Loss != nil:
		return w.Loss(*it.Loss)
	}
	return nil
}

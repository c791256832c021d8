package main

import (
	"bytes"
	"io"
	"sync"
)

// linePrefixer makes every line written to stderr start with "tcpwatch: ",
// whatever wrote it: a multi-line error (the verifier's log after a load
// failure, errors joined from several namespaces) stays recognisable line
// by line in a log that mixes programs. Lines that already start with the
// prefix are left alone.
type linePrefixer struct {
	mu      sync.Mutex
	w       io.Writer
	prefix  []byte
	partial []byte // the current line, until its newline
}

func newLinePrefixer(w io.Writer) *linePrefixer {
	return &linePrefixer{w: w, prefix: []byte("tcpwatch: ")}
}

func (p *linePrefixer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	var out []byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.partial = append(p.partial, b...)
			break
		}
		line := append(p.partial, b[:i]...)
		p.partial = p.partial[:0]
		b = b[i+1:]
		out = p.appendLine(out, line)
	}
	if len(out) == 0 {
		return n, nil
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return n, nil
}

func (p *linePrefixer) appendLine(out, line []byte) []byte {
	if !bytes.HasPrefix(line, p.prefix) {
		out = append(out, p.prefix...)
	}
	out = append(out, line...)
	return append(out, '\n')
}

// Flush writes a last line that had no newline.
func (p *linePrefixer) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.partial) == 0 {
		return nil
	}
	out := p.appendLine(nil, p.partial)
	p.partial = p.partial[:0]
	_, err := p.w.Write(out)
	return err
}

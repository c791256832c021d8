package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/exposure"
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
	r, err := tracer.OpenSocketReader()
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

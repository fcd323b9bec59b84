package task

import (
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/tupper/tupper/shim/bundle"
	"github.com/tupper/tupper/shim/process"
	"golang.org/x/sys/unix"
)

// waitExit waits for p to be reaped and reports the exit. For init, the
// exits of the container's execs go first (containerd expects the init's
// TaskExit to be the last of a container), and the status is persisted
// for a later `shim delete`.
func (s *service) waitExit(c *Container, p *process.Process) {
	code, at, err := p.Handle().Wait()
	if err != nil {
		log.G(s.ctx).WithError(err).WithField("id", c.ID).Warn("wait for process")
	}
	id, pid := p.ID, p.Snapshot().Pid
	if id == "" {
		id = c.ID
		s.endContainer(c)
		if err := bundle.WriteExit(c.Bundle, bundle.Exit{Pid: pid, Status: code, ExitedAt: at}); err != nil {
			log.G(s.ctx).WithError(err).Warn("record exit status")
		}
	}
	// An OOM kill goes out before the exit it caused.
	s.reportOOM(c, false)
	err = p.Exit(code, at, func() {
		s.events.send(&eventstypes.TaskExit{
			ContainerID: c.ID,
			ID:          id,
			Pid:         uint32(pid),
			ExitStatus:  uint32(code),
			ExitedAt:    protobuf.ToTimestamp(at),
		})
	})
	if err != nil {
		log.G(s.ctx).WithError(err).Warn("exit of a process in an unexpected state")
	}
}

// endContainer ends what the init's exit leaves. A container ends with its
// init; in a shared pid namespace the kernel leaves init's children
// running (and holding the container's output open), so they are killed
// here, as under runc. Running execs get a little time to exit first.
func (s *service) endContainer(c *Container) {
	if !c.ctr.OwnPidNamespace() {
		if m := c.cg.Manager(); m != nil {
			if err := m.KillAll(); err != nil {
				log.G(s.ctx).WithError(err).WithField("id", c.ID).Warn("kill what init left in a shared pid namespace")
			}
		}
	}
	s.drainExecs(c)
}

// drainExecs waits a little for running execs to exit after their init
// did. In a pid namespace of its own the kernel kills them with init;
// otherwise they are killed here, as a container ends with its init. An
// exec the kernel has already ended (Kill finds it gone) is waited for
// too: its exit may not be reported yet, and it must go before init's.
func (s *service) drainExecs(c *Container) {
	deadline := time.After(5 * time.Second)
	for _, e := range c.execList() {
		if errdefs.IsFailedPrecondition(e.Kill(unix.SIGKILL, nil)) {
			continue // never started: no exit to wait for
		}
		select {
		case <-e.Exited():
		case <-deadline:
			return
		}
	}
}

package task

import (
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/log"
	"github.com/tupper/tupper/shim/bundle"
	"github.com/tupper/tupper/shim/process"
)

// waitExit waits for p to be reaped and reports the exit. For init, the
// exits of the container's execs go first (containerd expects the init's
// TaskExit to be the last of a container), and the status is persisted
// for a later `shim delete`.
func (s *service) waitExit(c *Container, p *process.Process) {
	code, at, err := p.Container().Wait()
	if err != nil {
		log.G(s.ctx).WithError(err).WithField("id", c.ID).Warn("wait for process")
	}
	id := p.ID
	if id == "" {
		id = c.ID
		if !c.ctr.OwnPidNamespace() {
			// A container ends with its init; in a shared pid namespace
			// the kernel leaves init's children running (and holding the
			// container's output open), so they go here, as under runc.
			if m := c.cg.manager(); m != nil {
				if err := m.KillAll(); err != nil {
					log.G(s.ctx).WithError(err).WithField("id", c.ID).Warn("kill what init left in a shared pid namespace")
				}
			}
		}
		s.drainExecs(c)
		if err := bundle.WriteExit(c.Bundle, bundle.Exit{Pid: p.Pid(), Status: code, ExitedAt: at}); err != nil {
			log.G(s.ctx).WithError(err).Warn("record exit status")
		}
	}
	// An OOM kill goes out before the exit it caused.
	s.reportOOM(c, false)
	p.Lock()
	defer p.Unlock()
	if err := p.SetExited(code, at); err != nil {
		log.G(s.ctx).WithError(err).Warn("exit of a process in an unexpected state")
		return
	}
	s.events.send(&eventstypes.TaskExit{
		ContainerID: c.ID,
		ID:          id,
		Pid:         uint32(p.Pid()),
		ExitStatus:  uint32(code),
		ExitedAt:    protobuf.ToTimestamp(at),
	})
}

// drainExecs waits a little for running execs to exit after their init
// did. In a pid namespace of its own the kernel kills them with init;
// otherwise they are killed here, as a container ends with its init.
func (s *service) drainExecs(c *Container) {
	deadline := time.After(5 * time.Second)
	for _, e := range c.execList() {
		e.Lock()
		running := e.Status() == process.Running
		if running {
			e.Container().Signal(9)
		}
		e.Unlock()
		if !running {
			continue
		}
		select {
		case <-e.Exited():
		case <-deadline:
			return
		}
	}
}

package task

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/process"
	"golang.org/x/sys/unix"
)

// Kill signals a process; with All, every process of the container.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*types.Empty, error) {
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	sig := unix.Signal(r.Signal)
	p.Lock()
	defer p.Unlock()
	if r.All && r.ExecID == "" {
		if st := p.Status(); st == process.Stopped || st == process.Deleted {
			return nil, errgrpc.ToGRPC(fmt.Errorf("process already finished: %w", errdefs.ErrNotFound))
		}
		if err := s.killAll(c, sig); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		return &types.Empty{}, nil
	}
	if err := p.Kill(sig); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if sig == unix.SIGKILL && r.ExecID == "" {
		// A frozen process dies only once it runs again.
		s.thawForKill(c)
	}
	return &types.Empty{}, nil
}

// killAll signals every process of the container: those in its cgroup
// when it has one (SIGKILL through the freezer, so that a fork loop
// cannot escape), otherwise those of its pid namespace.
func (s *service) killAll(c *Container, sig unix.Signal) error {
	m := c.cg.manager()
	if m == nil {
		return c.ctr.KillAll(sig)
	}
	if sig == unix.SIGKILL {
		err := m.KillAll()
		s.thawForKill(c)
		return err
	}
	pids, err := m.Pids()
	if err != nil {
		return err
	}
	return container.SignalPids(pids, sig)
}

// thawForKill thaws a paused container that was just SIGKILLed.
func (s *service) thawForKill(c *Container) {
	m := c.cg.manager()
	if m == nil {
		return
	}
	c.cg.mu.Lock()
	defer c.cg.mu.Unlock()
	if !c.cg.paused {
		return
	}
	if err := m.Thaw(); err != nil {
		log.G(s.ctx).WithError(err).WithField("id", c.ID).Warn("thaw a killed paused container")
		return
	}
	c.cg.paused = false
}

package task

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs/pkg/errgrpc"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"github.com/tupper/tupper/shim/container"
	"golang.org/x/sys/unix"
)

// Kill signals a process; with All, every process of the container.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*types.Empty, error) {
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	sig := unix.Signal(r.Signal)
	if r.All && r.ExecID == "" {
		err = p.Signal(sig, func(*container.Process) error { return s.killAll(c, sig) }, s.thaw(c))
	} else {
		err = p.Kill(sig, s.thaw(c))
	}
	return &types.Empty{}, errgrpc.ToGRPC(err)
}

// killAll signals every process of the container: those in its cgroup
// when it has one (SIGKILL through the freezer, so that a fork loop
// cannot escape), otherwise those of its pid namespace.
func (s *service) killAll(c *Container, sig unix.Signal) error {
	m := c.cg.Manager()
	if m == nil {
		return c.ctr.KillAll(sig)
	}
	if sig == unix.SIGKILL {
		return m.KillAll()
	}
	pids, err := m.Pids()
	if err != nil {
		return err
	}
	return container.SignalPids(pids, sig)
}

// thaw thaws the container's cgroup, for a paused init that was SIGKILLed.
func (s *service) thaw(c *Container) func() error {
	return func() error {
		if m := c.cg.Manager(); m != nil {
			return m.Thaw()
		}
		return nil
	}
}

package task

import (
	"context"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/process"
)

// Start execs a created init, or spawns a registered exec.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	var pid int
	if r.ExecID == "" {
		restoring := c.restore != nil
		pid, err = p.Start(s.startInit(ctx, c), func(pid int) {
			s.events.send(&eventstypes.TaskStart{ContainerID: c.ID, Pid: uint32(pid)})
		})
		if err == nil && restoring {
			// A restored init exists only now.
			s.watchOOM(c)
			go s.waitExit(c, c.init)
		}
	} else {
		pid, err = p.Start(s.startExec(ctx, c, p), func(pid int) {
			s.events.send(&eventstypes.TaskExecStarted{ContainerID: c.ID, ExecID: p.ID, Pid: uint32(pid)})
		})
		if err == nil {
			go s.waitExit(c, p)
		}
	}
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.StartResponse{Pid: uint32(pid)}, nil
}

// startInit execs the init's program and runs the poststart hooks.
func (s *service) startInit(ctx context.Context, c *Container) func() (*container.Process, *process.IO, error) {
	if c.restore != nil {
		return s.restoreInit(ctx, c)
	}
	return func() (*container.Process, *process.IO, error) {
		if err := c.ctr.Start(); err != nil {
			return nil, nil, err
		}
		if h := c.ctr.Spec().Hooks; h != nil && len(h.Poststart) > 0 {
			for _, err := range container.RunHooksWarn(h.Poststart, c.ctr.State(specs.StateRunning), reaperStart) {
				log.G(ctx).WithError(err).WithField("id", c.ID).Warn("poststart")
			}
		}
		return nil, nil, nil
	}
}

// startExec spawns the exec p in c, while c's init runs: holding the
// init's lock, so that the helper cannot meet a frozen cgroup (a pause)
// before it is ready, nor a container that ended.
func (s *service) startExec(ctx context.Context, c *Container, p *process.Process) func() (*container.Process, *process.IO, error) {
	return func() (cp *container.Process, pio *process.IO, err error) {
		err = c.init.WhileRunning(func() error {
			cp, pio, err = s.spawnExec(ctx, c, p)
			return err
		})
		switch {
		case err != nil && c.paused():
			// Refused: its helper would freeze in the cgroup before it
			// got ready.
			return nil, nil, errExecPaused{}
		case err != nil:
			return nil, nil, fmt.Errorf("container %q: %w", c.ID, err)
		}
		return cp, pio, nil
	}
}

func (s *service) spawnExec(ctx context.Context, c *Container, p *process.Process) (*container.Process, *process.IO, error) {
	ns, _ := namespaces.Namespace(ctx)
	pio, err := c.newIO(ctx, c.ID+"-"+p.ID, ns, p.Stdio)
	if err != nil {
		return nil, nil, fmt.Errorf("set up exec stdio: %w", err)
	}
	spec := *p.Spec
	spec.Terminal = p.Stdio.Terminal
	cp, err := c.ctr.Exec(&spec, pio.ChildStdio())
	pio.CloseChildEnds()
	if err != nil {
		pio.Close()
		return nil, nil, err
	}
	if spec.Terminal {
		if err := pio.AttachConsole(cp.Console()); err != nil {
			cp.Signal(9)
			pio.Close()
			return nil, nil, err
		}
	}
	return cp, pio, nil
}

// errExecPaused refuses an exec into a paused container with the words of
// runc's shim, which clients show as they are (nerdctl: "cannot exec in a
// paused state"), and the failed-precondition code.
type errExecPaused struct{}

func (errExecPaused) Error() string { return "cannot exec in a paused state" }

func (errExecPaused) Is(target error) bool { return target == errdefs.ErrFailedPrecondition }

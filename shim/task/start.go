package task

import (
	"context"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/process"
)

// Start execs a created init, or spawns a registered exec.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	p.Lock()
	defer p.Unlock()
	if p.Status() != process.Created {
		return nil, errgrpc.ToGRPC(fmt.Errorf("process is %s: %w", p.Status(), errdefs.ErrFailedPrecondition))
	}
	if r.ExecID == "" {
		if err := c.ctr.Start(); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		p.SetRunning()
		if h := c.ctr.Spec().Hooks; h != nil && len(h.Poststart) > 0 {
			for _, err := range container.RunHooksWarn(h.Poststart, c.ctr.State(specs.StateRunning), reaperStart) {
				log.G(ctx).WithError(err).WithField("id", c.ID).Warn("poststart")
			}
		}
		s.events.send(&eventstypes.TaskStart{ContainerID: c.ID, Pid: uint32(p.Pid())})
		return &taskAPI.StartResponse{Pid: uint32(p.Pid())}, nil
	}
	if err := s.startExec(ctx, c, p); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.events.send(&eventstypes.TaskExecStarted{ContainerID: c.ID, ExecID: p.ID, Pid: uint32(p.Pid())})
	go s.waitExit(c, p)
	return &taskAPI.StartResponse{Pid: uint32(p.Pid())}, nil
}

// startExec runs p in c; the caller holds p's lock.
func (s *service) startExec(ctx context.Context, c *Container, p *process.Process) error {
	c.init.Lock()
	initRunning := c.init.Status() == process.Running
	c.init.Unlock()
	if !initRunning {
		return fmt.Errorf("container %q is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if c.isPaused() {
		// Its helper would freeze in the cgroup before it got ready.
		return errExecPaused{}
	}
	ns, _ := namespaces.Namespace(ctx)
	pio, err := c.newIO(ctx, c.ID+"-"+p.ID, ns, p.Stdio)
	if err != nil {
		return fmt.Errorf("set up exec stdio: %w", err)
	}
	spec := *p.Spec
	spec.Terminal = p.Stdio.Terminal
	cp, err := c.ctr.Exec(&spec, pio.ChildStdio())
	pio.CloseChildEnds()
	if err != nil {
		pio.Close()
		return err
	}
	p.IO = pio
	p.Attach(cp)
	if spec.Terminal {
		if err := pio.AttachConsole(cp.Console()); err != nil {
			cp.Signal(9)
			return err
		}
	}
	return p.SetRunning()
}

// errExecPaused refuses an exec into a paused container with the words of
// runc's shim, which clients show as they are (nerdctl: "cannot exec in a
// paused state"), and the failed-precondition code.
type errExecPaused struct{}

func (errExecPaused) Error() string { return "cannot exec in a paused state" }

func (errExecPaused) Is(target error) bool { return target == errdefs.ErrFailedPrecondition }

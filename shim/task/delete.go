package task

import (
	"context"
	"fmt"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/shim/bundle"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/process"
	"google.golang.org/protobuf/proto"
)

const ioDrainTimeout = 5 * time.Second

// Delete removes an exited exec, or the container once its init has
// exited (a created init is killed first).
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.ExecID != "" {
		resp, err := s.deleteExec(c, p)
		return resp, errgrpc.ToGRPC(err)
	}
	resp, err := s.deleteContainer(ctx, c)
	return resp, errgrpc.ToGRPC(err)
}

func (s *service) deleteExec(c *Container, p *process.Process) (*taskAPI.DeleteResponse, error) {
	p.Lock()
	defer p.Unlock()
	if p.Status() == process.Running {
		return nil, fmt.Errorf("exec %q is running: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	if p.IO != nil {
		p.IO.Wait(ioDrainTimeout)
		p.IO.Close()
	}
	if err := p.SetDeleted(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	delete(c.execs, p.ID)
	c.mu.Unlock()
	code, at := p.ExitStatus()
	return &taskAPI.DeleteResponse{Pid: uint32(p.Pid()), ExitStatus: uint32(code), ExitedAt: protobuf.ToTimestamp(at)}, nil
}

func (s *service) deleteContainer(ctx context.Context, c *Container) (*taskAPI.DeleteResponse, error) {
	p := c.init
	p.Lock()
	if p.Status() == process.Created {
		// Never started: kill the blocked init, and let its exit be
		// reported like any other.
		p.Container().Signal(9)
		p.Unlock()
		<-p.Exited()
		p.Lock()
	}
	defer p.Unlock()
	if p.Status() == process.Running {
		return nil, fmt.Errorf("container %q is running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if p.IO != nil {
		if !p.IO.Wait(ioDrainTimeout) {
			log.G(ctx).WithField("id", c.ID).Warn("output still open after init exit; dropping the rest")
		}
		p.IO.Close()
	}
	for _, e := range c.execList() {
		if e.IO != nil {
			e.IO.Close()
		}
	}
	cleaned := true
	if c.Rootfs != "" {
		if err := mount.UnmountRecursive(c.Rootfs, 0); err != nil {
			log.G(ctx).WithError(err).Warn("unmount rootfs")
			cleaned = false
		}
	}
	c.published.Close()
	// The addresses now; the veth, whose deletion takes 10-20 ms and
	// which nothing uses any more, after the reply.
	s.inBackground(bundle.ReleaseNetworkLater(s.ctx, c.Bundle))
	if !c.cg.remove(ctx) {
		cleaned = false
	}
	if h := c.ctr.Spec().Hooks; h != nil && len(h.Poststop) > 0 {
		for _, err := range container.RunHooksWarn(h.Poststop, c.ctr.State(specs.StateStopped), reaperStart) {
			log.G(ctx).WithError(err).WithField("id", c.ID).Warn("poststop")
		}
	}
	code, at := p.ExitStatus()
	resp := &taskAPI.DeleteResponse{Pid: uint32(p.Pid()), ExitStatus: uint32(code), ExitedAt: protobuf.ToTimestamp(at)}
	if cleaned && !bundle.NetworkRecorded(c.Bundle) {
		// containerd runs `shim delete` after every Delete (when the
		// connection closes) and waits for it: it need not redo what is
		// done, nor even start Go to say so.
		b, err := proto.Marshal(resp)
		if err == nil {
			err = bundle.MarkCleanedUp(c.Bundle, b)
		}
		if err != nil {
			log.G(ctx).WithError(err).Warn("record clean-up")
		}
	}
	if err := p.SetDeleted(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	delete(s.containers, c.ID)
	s.mu.Unlock()
	s.events.send(&eventstypes.TaskDelete{
		ContainerID: c.ID,
		ID:          c.ID,
		Pid:         resp.Pid,
		ExitStatus:  resp.ExitStatus,
		ExitedAt:    resp.ExitedAt,
	})
	return resp, nil
}

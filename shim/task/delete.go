package task

import (
	"context"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
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
	snap, err := p.Delete(func(_ process.Snapshot, pio *process.IO) error {
		if pio != nil {
			pio.Wait(ioDrainTimeout)
			pio.Close()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.removeExec(p.ID)
	return deleteResponse(snap), nil
}

func deleteResponse(snap process.Snapshot) *taskAPI.DeleteResponse {
	return &taskAPI.DeleteResponse{Pid: uint32(snap.Pid), ExitStatus: uint32(snap.ExitCode), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)}
}

// deleteContainer removes the container once its init has exited (a
// created init is killed first): stdio, rootfs, addresses, cgroup, then
// the poststop hooks. With everything undone it leaves its reply for
// `shim delete` (see shim/nsenter's fast path).
func (s *service) deleteContainer(ctx context.Context, c *Container) (*taskAPI.DeleteResponse, error) {
	var resp *taskAPI.DeleteResponse
	_, err := c.init.Delete(func(snap process.Snapshot, pio *process.IO) error {
		resp = deleteResponse(snap)
		cleaned := s.undoContainer(ctx, c, pio)
		if c.ctr == nil { // created from a checkpoint, never restored
			return nil
		}
		if h := c.ctr.Spec().Hooks; h != nil && len(h.Poststop) > 0 {
			for _, err := range container.RunHooksWarn(h.Poststop, c.ctr.State(specs.StateStopped), reaperStart) {
				log.G(ctx).WithError(err).WithField("id", c.ID).Warn("poststop")
			}
		}
		if cleaned && !bundle.NetworkRecorded(c.Bundle) {
			recordCleanedUp(ctx, c.Bundle, resp)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Not under the init's lock: an exec's lock may be held while its
	// Start waits for the init's, never the other way round.
	for _, e := range c.execList() {
		if pio := e.IO(); pio != nil {
			pio.Close()
		}
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

// undoContainer closes the init's stdio, unmounts its rootfs,
// releases its network (the veth, whose deletion waits for RCU grace periods and which
// nothing uses any more, after the reply) and removes its cgroup. It
// reports whether all of that is done.
func (s *service) undoContainer(ctx context.Context, c *Container, pio *process.IO) bool {
	if pio != nil {
		if !pio.Wait(ioDrainTimeout) {
			log.G(ctx).WithField("id", c.ID).Warn("output still open after init exit; dropping the rest")
		}
		pio.Close()
	}
	cleaned := true
	if c.Rootfs != "" {
		cleaned = bundle.UnmountRootfs(ctx, c.Rootfs)
	}
	c.published.Close()
	s.inBackground(bundle.ReleaseNetworkLater(s.ctx, c.Bundle))
	return s.removeCgroup(ctx, c) && cleaned
}

// recordCleanedUp leaves resp for `shim delete`, which containerd runs
// after every Delete and waits for: it need not redo what is done, nor
// even start Go to say so.
func recordCleanedUp(ctx context.Context, bundleDir string, resp *taskAPI.DeleteResponse) {
	b, err := proto.Marshal(resp)
	if err == nil {
		err = bundle.MarkCleanedUp(bundleDir, b)
	}
	if err != nil {
		log.G(ctx).WithError(err).Warn("record clean-up")
	}
}

package task

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
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
		if err := c.ctr.KillAll(sig); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		return &types.Empty{}, nil
	}
	if err := p.Kill(sig); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &types.Empty{}, nil
}

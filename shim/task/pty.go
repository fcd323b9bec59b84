package task

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
)

// ResizePty resizes a process' terminal.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*types.Empty, error) {
	_, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	pio := p.IO()
	if pio == nil {
		// An exec not started yet: runc's shim ignores the resize too
		// (nerdctl exec -t resizes before Start).
		return &types.Empty{}, nil
	}
	if err := pio.Resize(r.Width, r.Height); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %v", errdefs.ErrFailedPrecondition, err))
	}
	return &types.Empty{}, nil
}

// CloseIO closes a process' stdin.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*types.Empty, error) {
	_, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if pio := p.IO(); r.Stdin && pio != nil {
		pio.CloseStdin()
	}
	return &types.Empty{}, nil
}

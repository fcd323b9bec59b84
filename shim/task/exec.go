package task

import (
	"context"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"github.com/tupper/tupper/shim/process"
)

// Exec registers an additional process; Start runs it.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*types.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.ExecID == "" {
		return nil, errgrpc.ToGRPC(fmt.Errorf("empty exec id: %w", errdefs.ErrInvalidArgument))
	}
	v, err := typeurl.UnmarshalAny(r.Spec)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("exec spec: %w: %v", errdefs.ErrInvalidArgument, err))
	}
	spec, ok := v.(*specs.Process)
	if !ok {
		return nil, errgrpc.ToGRPC(fmt.Errorf("exec spec is %T, not a process: %w", v, errdefs.ErrInvalidArgument))
	}
	p := process.New(r.ExecID, stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}, spec)
	err = c.addExec(p, func() {
		s.events.send(&eventstypes.TaskExecAdded{ContainerID: c.ID, ExecID: r.ExecID})
	})
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &types.Empty{}, nil
}

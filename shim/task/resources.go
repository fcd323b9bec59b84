package task

import (
	"context"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
)

// The RPCs that act on a container's cgroup: Pause, Resume, Update, Stats.
// Pids and Kill(all) use it too (state.go, kill.go).

// Pause freezes every process of the container.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*types.Empty, error) {
	return s.setPaused(r.ID, true)
}

// Resume thaws a paused container.
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*types.Empty, error) {
	return s.setPaused(r.ID, false)
}

func (s *service) setPaused(id string, pause bool) (*types.Empty, error) {
	c, m, err := s.cgroupOf(id)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if pause {
		err = c.init.Pause(m.Freeze, func() { s.events.send(&eventstypes.TaskPaused{ContainerID: id}) })
	} else {
		err = c.init.Resume(m.Thaw, func() { s.events.send(&eventstypes.TaskResumed{ContainerID: id}) })
	}
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %q: %w", id, err))
	}
	return &types.Empty{}, nil
}

// Update applies new resources (a *specs.LinuxResources) to the running
// container.
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*types.Empty, error) {
	_, m, err := s.cgroupOf(r.ID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.Resources == nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("update without resources: %w", errdefs.ErrInvalidArgument))
	}
	v, err := typeurl.UnmarshalAny(r.Resources)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("update resources: %w: %v", errdefs.ErrInvalidArgument, err))
	}
	res, ok := v.(*specs.LinuxResources)
	if !ok {
		return nil, errgrpc.ToGRPC(fmt.Errorf("update resources are %T, not linux resources: %w", v, errdefs.ErrInvalidArgument))
	}
	if err := m.Update(ctx, res); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("update cgroup %s: %w", m.Path(), err))
	}
	return &types.Empty{}, nil
}

// Stats returns the cgroup's metrics: containerd's cgroup1 or cgroup2
// stats.Metrics, which ctr, CRI and the kubelet decode.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	_, m, err := s.cgroupOf(r.ID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	metrics, err := m.Stats()
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("cgroup stats: %w", err))
	}
	a, err := typeurl.MarshalAnyToProto(metrics)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}

package task

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// Resource control (cgroups) comes with its own issue; until then these
// answer ErrNotImplemented, as docs/runtime-v2.md asks of shims.

func notImplemented(what string) error {
	return errgrpc.ToGRPC(fmt.Errorf("%s: %w", what, errdefs.ErrNotImplemented))
}

func (s *service) Pause(context.Context, *taskAPI.PauseRequest) (*types.Empty, error) {
	return nil, notImplemented("pause")
}

func (s *service) Resume(context.Context, *taskAPI.ResumeRequest) (*types.Empty, error) {
	return nil, notImplemented("resume")
}

func (s *service) Update(context.Context, *taskAPI.UpdateTaskRequest) (*types.Empty, error) {
	return nil, notImplemented("update")
}

func (s *service) Stats(context.Context, *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return nil, notImplemented("stats")
}

func (s *service) Checkpoint(context.Context, *taskAPI.CheckpointTaskRequest) (*types.Empty, error) {
	return nil, notImplemented("checkpoint")
}

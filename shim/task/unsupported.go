package task

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// What tupper does not do answers ErrNotImplemented, as docs/runtime-v2.md
// asks of shims.

func notImplemented(what string) error {
	return errgrpc.ToGRPC(fmt.Errorf("%s: %w", what, errdefs.ErrNotImplemented))
}

func (s *service) Checkpoint(context.Context, *taskAPI.CheckpointTaskRequest) (*types.Empty, error) {
	return nil, notImplemented("checkpoint")
}

package task

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/protobuf/types"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
)

// Shutdown stops the shim once it serves no container any more; a shim
// shared by a group stays up for the other containers and for those whose
// start has joined it (join.go).
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*types.Empty, error) {
	s.stopIfIdle()
	return &types.Empty{}, nil
}

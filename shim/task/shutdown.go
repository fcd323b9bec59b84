package task

import (
	"context"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/protobuf/types"
)

// Shutdown stops the shim once it serves no container any more; a shim
// shared by a pod stays up for the other containers.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*types.Empty, error) {
	s.mu.Lock()
	n := len(s.containers) + len(s.creating)
	s.mu.Unlock()
	if n > 0 {
		return &types.Empty{}, nil
	}
	s.socket.remove()
	s.shutdown.Shutdown()
	return &types.Empty{}, nil
}

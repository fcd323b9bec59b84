// containerd-shim-tupper-v2 is the runtime v2 shim for io.containerd.tupper.v2.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/manager"
	"github.com/tupper/tupper/shim/serve"
	"github.com/tupper/tupper/shim/task"
	"github.com/tupper/tupper/version"

	// Joins of user and time namespaces, before the Go runtime starts.
	_ "github.com/tupper/tupper/shim/nsenter"
)

func main() {
	// The same binary is the container init helper (see shim/container).
	container.MaybeInit()
	serve.Main(manager.New("io.containerd.tupper.v2"), version.Version, newTaskService)
}

func newTaskService(ctx context.Context, pub serve.Publisher, sd shutdown.Service) (serve.Service, error) {
	return task.NewTaskService(ctx, pub, sd)
}

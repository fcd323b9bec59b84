// containerd-shim-tupper-v2 is the runtime v2 shim for io.containerd.tupper.v2.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/tupper/tupper/shim/container"
	// Joins of user and time namespaces, before the Go runtime starts.
	"github.com/tupper/tupper/shim/manager"
	_ "github.com/tupper/tupper/shim/nsenter"

	_ "github.com/tupper/tupper/shim/task/plugin"
)

func main() {
	// The same binary is the container init helper (see shim/container).
	container.MaybeInit()
	shim.RunShim(context.Background(), manager.New("io.containerd.tupper.v2"))
}

// containerd-shim-tupper-v2 is the runtime v2 shim for io.containerd.tupper.v2.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"
	containerdversion "github.com/containerd/containerd/v2/version"
	"github.com/tupper/tupper/shim/container"
	// Joins of user and time namespaces, before the Go runtime starts.
	"github.com/tupper/tupper/shim/manager"
	_ "github.com/tupper/tupper/shim/nsenter"

	_ "github.com/tupper/tupper/shim/task/plugin"
	"github.com/tupper/tupper/version"
)

func main() {
	// The same binary is the container init helper (see shim/container).
	container.MaybeInit()
	// pkg/shim prints containerd's version for -v; make it ours.
	containerdversion.Version = version.Version
	containerdversion.Revision = ""
	shim.RunShim(context.Background(), manager.New("io.containerd.tupper.v2"))
}

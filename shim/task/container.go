package task

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/network"
	"github.com/tupper/tupper/shim/process"
)

// Container is the shim's per-container state.
type Container struct {
	ID     string
	Bundle string
	// Rootfs is the mount target the shim mounted (and must unmount), or
	// "" when containerd passed no rootfs mounts.
	Rootfs string

	ctr  *container.Container
	init *process.Process
	cg   *cgroup // nil without one
	// published forwards host ports to the container until Delete.
	published *network.Publisher
	// ioOwner, if set, owns every process' stdio pipes (runc's IoUid
	// and IoGid options).
	ioOwner *[2]int

	mu    sync.Mutex
	execs map[string]*process.Process
}

// Process returns init for "" and the exec otherwise.
func (c *Container) Process(execID string) (*process.Process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("exec %q in container %q: %w", execID, c.ID, errdefs.ErrNotFound)
	}
	return p, nil
}

func (c *Container) execList() []*process.Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := make([]*process.Process, 0, len(c.execs))
	for _, p := range c.execs {
		ps = append(ps, p)
	}
	return ps
}

// newIO opens a process' stdio and gives its pipes to the container's
// I/O owner, if the options named one.
func (c *Container) newIO(ctx context.Context, id, ns string, sio stdio.Stdio) (*process.IO, error) {
	pio, err := process.NewIO(ctx, id, ns, sio, reaperStart)
	if err != nil || c.ioOwner == nil {
		return pio, err
	}
	if err := pio.Chown(c.ioOwner[0], c.ioOwner[1]); err != nil {
		pio.CloseChildEnds()
		pio.Close()
		return nil, err
	}
	return pio, nil
}

package task

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/tupper/tupper/shim/cgroups"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/network"
	"github.com/tupper/tupper/shim/process"
)

// Container is the shim's per-container state. Lock order: an exec's
// lock may be held while the init's is taken (an exec starts only while
// its init runs), never the other way round.
type Container struct {
	ID     string
	Bundle string
	// Rootfs is the mount target the shim mounted (and must unmount), or
	// "" when containerd passed no rootfs mounts.
	Rootfs string

	ctr  *container.Container
	init *process.Process
	cg   *cgroups.Placement // nil without a cgroup
	oom  oomWatch
	// published forwards host ports to the container until Delete.
	published *network.Publisher
	// ioOwner, if set, owns every process' stdio pipes (runc's IoUid
	// and IoGid options).
	ioOwner *[2]int
	// att is what tupper's network gave the container (nil for none).
	att *network.Attachment
	// restore is set from a Create with a checkpoint until Start restores
	// it (restore.go); ctr is nil meanwhile.
	restore *restoreInfo

	mu    sync.Mutex // guards execs
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

// addExec registers p, unless an exec of that id exists; report runs
// under the lock, so ExecAdded goes out before anything else of p's.
func (c *Container) addExec(p *process.Process, report func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.execs[p.ID]; ok {
		return fmt.Errorf("exec %q: %w", p.ID, errdefs.ErrAlreadyExists)
	}
	c.execs[p.ID] = p
	report()
	return nil
}

func (c *Container) removeExec(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.execs, id)
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

// pid is the init's pid, 0 before a restore made it.
func (c *Container) pid() int {
	if c.ctr == nil {
		return 0
	}
	return c.ctr.Pid()
}

// paused reports whether the container is paused (its init's state).
func (c *Container) paused() bool { return c.init.Snapshot().Status == process.Paused }

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

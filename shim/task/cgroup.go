package task

import (
	"context"
	"fmt"
	"sync"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/shim/cgroups"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/options"
)

// cgroup is a container's cgroup as the shim uses it. With the systemd
// driver the cgroup is made when the init helper exists (spawned, before
// it proceeds), so that the scope starts with that pid; with cgroupfs just
// before the helper starts (join). Either way the helper is limited
// from its first instruction. A nil *cgroup means the container
// has none (a spec without cgroupsPath and resources); every method
// accepts that.
type cgroup struct {
	path    string
	systemd bool
	res     *specs.LinuxResources
	owner   int // the host uid the cgroup is delegated to, 0 for none (cgroups.DelegateOwner)

	mu           sync.Mutex
	m            *cgroups.Manager // nil until the init helper was spawned
	removed      bool             // by remove: no helper may make it again
	paused       bool
	oomsReported uint64
	cancel       context.CancelFunc
}

// newCgroup checks what the spec asks for against this host; it creates
// nothing yet. Resources the host cannot enforce fail Create here.
func newCgroup(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (*cgroup, error) {
	if spec.Linux == nil || (spec.Linux.CgroupsPath == "" && spec.Linux.Resources == nil) {
		return nil, nil
	}
	opts, err := options.FromAny(r.Options)
	if err != nil {
		return nil, err
	}
	cg := &cgroup{path: spec.Linux.CgroupsPath, systemd: opts.GetSystemdCgroup(), res: spec.Linux.Resources,
		owner: cgroups.DelegateOwner(spec)}
	if cg.path == "" {
		cg.path = cgroups.DefaultPath(r.ID, cg.systemd)
	}
	if err := cgroups.Check(cg.res); err != nil {
		return nil, fmt.Errorf("container %s: %w", r.ID, err)
	}
	return cg, nil
}

// errPaused refuses a new helper: one moved into a frozen cgroup would
// stop before it got ready. (Pause after that point only delays the exec.)
var errPaused = fmt.Errorf("container is paused: %w", errdefs.ErrFailedPrecondition)

// errRemoved refuses a helper (an exec racing Delete) once the cgroup was
// removed, which would otherwise be made again and never removed.
var errRemoved = fmt.Errorf("container is being deleted: %w", errdefs.ErrFailedPrecondition)

// join is container.Options.CgroupJoin. With the cgroupfs driver the
// cgroup needs no pid to be made, so the first call (the init helper's)
// makes it before the helper exists, and every helper then enters it by
// itself (tasks files on v1, cloned into its directory on v2), far cheaper
// than onSpawn moving it.
func (cg *cgroup) join(ctx context.Context) func() (container.CgroupJoin, error) {
	if cg == nil || cg.systemd {
		return nil
	}
	return func() (j container.CgroupJoin, err error) {
		cg.mu.Lock()
		defer cg.mu.Unlock()
		m, err := cg.managerLocked(ctx, 0)
		if err != nil {
			return j, err
		}
		if j.TasksFiles, err = m.JoinFiles(); err != nil {
			return j, err
		}
		j.Dir, err = m.JoinDir()
		return j, err
	}
}

// managerLocked returns the cgroup, made now if it does not exist yet
// (the systemd driver starts its scope with pid), or refuses a new
// helper. cg.mu is held.
func (cg *cgroup) managerLocked(ctx context.Context, pid int) (*cgroups.Manager, error) {
	if cg.paused {
		return nil, errPaused
	}
	if cg.removed {
		return nil, errRemoved
	}
	if cg.m == nil {
		m, err := cgroups.New(ctx, cg.path, cgroups.WithDefaultDevices(cg.res), cg.systemd, pid)
		if err != nil {
			return nil, err
		}
		if err := m.Delegate(cg.owner); err != nil {
			m.Delete()
			return nil, err
		}
		cg.m = m
	}
	return cg.m, nil
}

// onSpawn is container.Options.OnSpawn: the first call (the init helper)
// creates the cgroup with the spec's resources unless join did, and
// every call moves the helper into it unless it moved itself.
func (cg *cgroup) onSpawn(ctx context.Context) func(pid int) error {
	if cg == nil {
		return nil
	}
	return func(pid int) error {
		cg.mu.Lock()
		defer cg.mu.Unlock()
		m, err := cg.managerLocked(ctx, pid)
		if err != nil || m.JoinsAtSpawn() {
			return err
		}
		if err := m.Add(pid); err != nil {
			return fmt.Errorf("move process %d into cgroup %s: %w", pid, m.Path(), err)
		}
		return nil
	}
}

func (cg *cgroup) manager() *cgroups.Manager {
	if cg == nil {
		return nil
	}
	cg.mu.Lock()
	defer cg.mu.Unlock()
	return cg.m
}

// remove stops the OOM watch and deletes the cgroup, killing whatever is
// still in it. It reports whether the cgroup is gone (or there was none).
func (cg *cgroup) remove(ctx context.Context) bool {
	if cg == nil {
		return true
	}
	cg.mu.Lock()
	m, cancel := cg.m, cg.cancel
	cg.m, cg.cancel, cg.removed = nil, nil, true
	cg.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if m == nil {
		return true
	}
	if err := m.Delete(); err != nil {
		log.G(ctx).WithError(err).WithField("cgroup", m.Path()).Warn("delete cgroup")
		return false
	}
	return true
}

// watchOOM publishes TaskOOM for OOM kills the kernel reports while the
// container runs.
func (s *service) watchOOM(c *Container) {
	m := c.cg.manager()
	if m == nil {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	c.cg.mu.Lock()
	c.cg.cancel = cancel
	c.cg.mu.Unlock()
	if err := m.WatchOOM(ctx, func() { s.reportOOM(c, true) }); err != nil {
		log.G(s.ctx).WithError(err).WithField("id", c.ID).Warn("cannot watch for OOM kills; TaskOOM will only be sent with exits")
	}
}

// reportOOM publishes TaskOOM once per OOM kill. The watcher calls it with
// notified=true when the kernel signals an OOM (v1's eventfd fires as the
// OOM starts, possibly before the kill is counted); waitExit calls it
// before every TaskExit, so that a process the OOM killer took has its
// TaskOOM queued before its exit even when the watcher has not woken yet.
func (s *service) reportOOM(c *Container, notified bool) {
	if c.cg == nil {
		return
	}
	c.cg.mu.Lock()
	defer c.cg.mu.Unlock()
	if c.cg.m == nil {
		return
	}
	n, err := c.cg.m.OOMKills()
	if err != nil {
		log.G(s.ctx).WithError(err).Debug("read OOM kill count")
	}
	switch {
	case n > c.cg.oomsReported:
		c.cg.oomsReported = n
	case notified:
		c.cg.oomsReported++
	default:
		return
	}
	s.events.send(&eventstypes.TaskOOM{ContainerID: c.ID})
}

// cgroupOf returns the container and its cgroup for the RPCs that need
// one; a container whose spec has no cgroup is NotFound.
func (s *service) cgroupOf(id string) (*Container, *cgroups.Manager, error) {
	c, err := s.get(id)
	if err != nil {
		return nil, nil, err
	}
	m := c.cg.manager()
	if m == nil {
		return nil, nil, fmt.Errorf("container %q has no cgroup (its spec has no linux.cgroupsPath): %w", id, errdefs.ErrNotFound)
	}
	return c, m, nil
}

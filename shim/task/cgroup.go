package task

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/tupper/tupper/shim/cgroups"
	"golang.org/x/sys/unix"
)

// oomWatch reports a container's OOM kills as TaskOOM, once each.
type oomWatch struct {
	mu       sync.Mutex
	reported uint64
	cancel   context.CancelFunc
	// killLog counts the init's OOM kills when the cgroup may be removed
	// before its count is read (cgroups.KillLog); nil otherwise.
	killLog *cgroups.KillLog
}

// watchOOM publishes TaskOOM for OOM kills the kernel reports while the
// container runs.
func (s *service) watchOOM(c *Container) {
	m := c.cg.Manager()
	if m == nil {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	c.oom.mu.Lock()
	c.oom.cancel = cancel
	c.oom.openKillLog(s.ctx, m, c.init.Snapshot().Pid)
	c.oom.mu.Unlock()
	if err := m.WatchOOM(ctx, func() { s.reportOOM(c, true) }); err != nil {
		log.G(s.ctx).WithError(err).WithField("id", c.ID).Warn("cannot watch for OOM kills; TaskOOM will only be sent with exits")
	}
}

// openKillLog starts reading the kernel log for init's OOM kills, if m
// may be removed before the shim reads its count; a restored init gets a
// new log.
func (w *oomWatch) openKillLog(ctx context.Context, m *cgroups.Manager, init int) {
	w.closeKillLog()
	if !m.RemovedWhenEmpty() {
		return
	}
	l, err := cgroups.OpenKillLog(init)
	if err != nil {
		log.G(ctx).WithError(err).Warn("cannot read the kernel log; an OOM kill of init may go unreported if systemd removes the cgroup first")
		return
	}
	w.killLog = l
}

func (w *oomWatch) closeKillLog() {
	if w.killLog != nil {
		w.killLog.Close()
		w.killLog = nil
	}
}

// stop ends the watch.
func (w *oomWatch) stop() {
	w.mu.Lock()
	cancel := w.cancel
	w.cancel = nil
	w.closeKillLog()
	w.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// kills returns the OOM kill count of m, or when m's files are gone, the
// init's kills the kernel logged. Called with w.mu held.
func (w *oomWatch) kills(m *cgroups.Manager) (uint64, error) {
	n, err := m.OOMKills()
	if err == nil || w.killLog == nil || !(errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV)) {
		return n, err
	}
	n, err = w.killLog.Kills()
	log.L.WithField("cgroup", m.Path()).Debugf("cgroup removed before its OOM kill count was read; the kernel log has %d OOM kills of init", n)
	return n, err
}

// reportOOM publishes TaskOOM once per OOM kill. The watcher calls it with
// notified=true when the kernel signals an OOM (v1's eventfd fires as the
// OOM starts, possibly before the kill is counted); waitExit calls it
// before every TaskExit, so that a process the OOM killer took has its
// TaskOOM queued before its exit even when the watcher has not woken yet.
func (s *service) reportOOM(c *Container, notified bool) {
	m := c.cg.Manager()
	if m == nil {
		return
	}
	c.oom.mu.Lock()
	defer c.oom.mu.Unlock()
	n, err := c.oom.kills(m)
	if err != nil {
		log.G(s.ctx).WithError(err).Debug("read OOM kill count")
	}
	switch {
	case n > c.oom.reported:
		c.oom.reported = n
	case notified:
		c.oom.reported++
	default:
		return
	}
	s.events.send(&eventstypes.TaskOOM{ContainerID: c.ID})
}

// removeCgroup stops the OOM watch and deletes the cgroup, killing
// whatever is still in it. It reports whether the cgroup is gone (or there
// was none).
func (s *service) removeCgroup(ctx context.Context, c *Container) bool {
	c.oom.stop()
	if err := c.cg.Remove(); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.ID).Warn("delete cgroup")
		return false
	}
	return true
}

// cgroupOf returns the container and its cgroup for the RPCs that need
// one; a container whose spec has no cgroup is NotFound.
func (s *service) cgroupOf(id string) (*Container, *cgroups.Manager, error) {
	c, err := s.get(id)
	if err != nil {
		return nil, nil, err
	}
	m := c.cg.Manager()
	if m == nil {
		return nil, nil, fmt.Errorf("container %q has no cgroup (its spec has no linux.cgroupsPath): %w", id, errdefs.ErrNotFound)
	}
	return c, m, nil
}

package cgroups

import (
	"context"
	"encoding/binary"
	"os"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// WatchOOM calls onOOM each time the kernel's OOM killer strikes in the
// container, until ctx is done or the cgroup is deleted. The shim publishes
// TaskOOM from onOOM, which runs before the killed init's exit is reaped.
func (m *Manager) WatchOOM(ctx context.Context, onOOM func()) error {
	if m.v2 != nil {
		return m.watchOOMv2(ctx, onOOM)
	}
	return m.watchOOMv1(ctx, onOOM)
}

// v1: an eventfd registered on memory.oom_control fires on each OOM, and
// once more when the cgroup is removed.
func (m *Manager) watchOOMv1(ctx context.Context, onOOM func()) error {
	fd, err := m.v1.OOMEventFD()
	if err != nil {
		return err
	}
	// Non-blocking, so that closing the file wakes the reader when ctx ends.
	if err := unix.SetNonblock(int(fd), true); err != nil {
		unix.Close(int(fd))
		return err
	}
	f := os.NewFile(fd, "oom-eventfd")
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	go func() {
		defer f.Close()
		buf := make([]byte, 8)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			if binary.LittleEndian.Uint64(buf) == 0 || m.v1.State() == cgroup1.Deleted {
				return
			}
			onOOM()
		}
	}()
	return nil
}

// v2: memory.events counts oom_kill; every increase is an OOM kill.
func (m *Manager) watchOOMv2(ctx context.Context, onOOM func()) error {
	events, errs := m.v2.EventChan()
	go func() {
		var seen uint64
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-errs:
				if err != nil {
					log.G(ctx).WithError(err).Debug("cgroup v2 event watch ended")
				}
				return
			case e := <-events:
				if e.OOMKill > seen {
					seen = e.OOMKill
					onOOM()
				}
			}
		}
	}()
	return nil
}

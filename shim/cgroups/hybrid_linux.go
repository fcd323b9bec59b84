package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/cgroups/v3"
)

// unifiedMount is where a hybrid host mounts the v2 hierarchy, which has
// no controllers there but still names every process' cgroup ("0::").
const unifiedMount = mountpoint + "/unified"

// hybridDir is the container's cgroup in a hybrid host's v2 hierarchy:
// runc puts the container there too (0::/default/<id> in
// /proc/<pid>/cgroup), and so do we, which containerd/cgroups' v1 code
// does not. "" elsewhere, and with the systemd driver, whose scope
// systemd places itself.
func hybridDir(path string, systemd bool) string {
	if systemd || cgroups.Mode() != cgroups.Hybrid {
		return ""
	}
	if _, err := os.Stat(filepath.Join(unifiedMount, "cgroup.procs")); err != nil {
		return ""
	}
	return filepath.Join(unifiedMount, path)
}

// makeHybrid makes the v2 side of a new v1 cgroup.
func (m *Manager) makeHybrid(systemd bool) error {
	d := hybridDir(m.path, systemd)
	if d == "" {
		return nil
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("cgroup %s in the unified hierarchy: %w", m.path, err)
	}
	m.unifiedDir = d
	return nil
}

// addHybrid moves pid into the v2 side, if there is one.
func (m *Manager) addHybrid(pid int) error {
	if m.unifiedDir == "" {
		return nil
	}
	return writeFile(filepath.Join(m.unifiedDir, "cgroup.procs"), strconv.Itoa(pid))
}

// deleteHybrid removes the v2 side once its processes are gone (the v1
// side was deleted first, its processes killed).
func (m *Manager) deleteHybrid() error {
	if m.unifiedDir == "" {
		return nil
	}
	if err := os.Remove(m.unifiedDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

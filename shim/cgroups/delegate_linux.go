package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DelegateOwner is the host uid that a container's cgroup is handed to, as
// runc does: when the container has a cgroup namespace, a read-write
// cgroup mount at /sys/fs/cgroup and a user namespace mapping its
// process' uid, the mapped uid owns the cgroup, so that a container that
// manages cgroups itself (systemd as its init) can. 0: root keeps it.
// Only the systemd driver on cgroup v2 delegates (Manager.Delegate), as
// runc's does.
func DelegateOwner(spec *specs.Spec) int {
	if spec == nil || spec.Linux == nil || len(spec.Linux.UIDMappings) == 0 {
		return 0
	}
	if !slices.ContainsFunc(spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.CgroupNamespace }) {
		return 0
	}
	rw := slices.ContainsFunc(spec.Mounts, func(m specs.Mount) bool {
		return m.Source == "cgroup" && filepath.Clean(m.Destination) == "/sys/fs/cgroup" && !slices.Contains(m.Options, "ro")
	})
	if !rw {
		return 0
	}
	var uid uint32
	if spec.Process != nil {
		uid = spec.Process.User.UID
	}
	for _, m := range spec.Linux.UIDMappings {
		if uid >= m.ContainerID && uid-m.ContainerID < m.Size {
			return int(m.HostID + uid - m.ContainerID)
		}
	}
	return 0
}

// Delegate makes uid the owner of the cgroup's directory and of the files
// the kernel names for delegation (/sys/kernel/cgroup/delegate:
// cgroup.procs, cgroup.subtree_control, ...). Only on v2 with the systemd
// driver, whose scope is Delegate=yes; elsewhere it does nothing.
func (m *Manager) Delegate(uid int) error {
	if uid <= 0 || m.v2 == nil || m.unit == "" {
		return nil
	}
	dir := filepath.Join(mountpoint, m.path)
	files, err := delegateFiles()
	if err != nil {
		return err
	}
	for _, f := range append([]string{""}, files...) {
		if err := os.Chown(filepath.Join(dir, f), uid, -1); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("delegating cgroup %s to uid %d: %w", m.path, uid, err)
		}
	}
	return nil
}

// delegateFiles lists the files a cgroup's delegatee must own; kernels
// before 4.15 have no list, and cgroups(7) names these three.
func delegateFiles() ([]string, error) {
	f, err := os.Open("/sys/kernel/cgroup/delegate")
	if errors.Is(err, os.ErrNotExist) {
		return []string{"cgroup.procs", "cgroup.subtree_control", "cgroup.threads"}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var files []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		files = append(files, sc.Text())
	}
	return files, sc.Err()
}

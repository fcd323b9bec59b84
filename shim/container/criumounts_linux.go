//go:build !tupper_nocriu

package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// CRIU restores a container's mount namespace from its image, except the
// mounts whose source lies outside it ("external" mounts): bind mounts of
// the host's files and directories. Each is named in the image by a key,
// its destination here, and a restore says which host path that key is
// bound from now. A checkpoint image can only name keys; the host paths
// always come from the restoring container's own spec, so a hostile image
// cannot make CRIU bind anything the spec does not.

// externalMount is one mount CRIU must not look inside.
type externalMount struct {
	dest   string // inside the container: the key
	source string // on the host, at restore
}

// externalMounts lists c's external mounts: its spec's bind mounts, the
// host cgroup directories a v1 cgroup mount shows (without a cgroup
// namespace), device nodes bound from the host, and masked files bound
// from /dev/null. Every key must be usable in CRIU's "mnt[KEY]:VAL".
// pid is in the container's cgroup: its init at a dump, CRIU at a
// restore (whose view of /proc and /sys stands for the container's).
func (c *Container) externalMounts(pid int) ([]externalMount, error) {
	var out []externalMount
	seen := map[string]bool{}
	add := func(dest, source string) error {
		dest = cleanDest(dest)
		if strings.ContainsAny(dest, "[]:,") {
			return invalid("mount destination %q cannot be named to CRIU (it holds one of []:,)", dest)
		}
		if !seen[dest] { // the spec's own mount of a path wins
			seen[dest] = true
			out = append(out, externalMount{dest: dest, source: source})
		}
		return nil
	}
	cgroupns := c.hasNamespace(specs.CgroupNamespace)
	for _, m := range c.spec.Mounts {
		switch {
		case isBind(m):
			src := m.Source
			if !filepath.IsAbs(src) {
				src = filepath.Join(c.Bundle, src)
			}
			if err := add(m.Destination, src); err != nil {
				return nil, err
			}
		case m.Type == "cgroup" && !cgroupns:
			binds, err := cgroupBinds(pid)
			if err != nil {
				return nil, err
			}
			for name, src := range binds {
				if err := add(filepath.Join(m.Destination, name), src); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, d := range allDevices(c.spec) {
		if err := add(d, d); err != nil {
			return nil, err
		}
	}
	if c.spec.Linux != nil {
		for _, p := range c.spec.Linux.MaskedPaths {
			// A masked directory is an empty tmpfs, which CRIU saves;
			// a masked file a bind of a null device. A key for a path
			// that is a mount of another kind would make CRIU take that
			// mount for external.
			if st, err := os.Stat(fmt.Sprintf("/proc/%d/root%s", pid, cleanDest(p))); err != nil || st.IsDir() {
				continue
			}
			if err := add(p, "/dev/null"); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// dumpMounts names c's external mounts to CRIU for a dump.
func (c *Container) dumpMounts(ro *rpc.CriuOpts) error {
	ext, err := c.externalMounts(c.init.pid)
	if err != nil {
		return err
	}
	for _, m := range ext {
		ro.ExtMnt = append(ro.ExtMnt, &rpc.ExtMountMap{Key: &m.dest, Val: &m.dest})
	}
	return nil
}

// restoreMounts names c's external mounts to CRIU for a restore, with
// their sources on this host; pid is CRIU, already in the container's
// cgroup.
func (c *Container) restoreMounts(ro *rpc.CriuOpts, pid int) error {
	ext, err := c.externalMounts(pid)
	if err != nil {
		return err
	}
	for _, m := range ext {
		ro.ExtMnt = append(ro.ExtMnt, &rpc.ExtMountMap{Key: &m.dest, Val: &m.source})
	}
	return nil
}

// cgroupBinds maps each v1 hierarchy directory of a cgroup mount (its
// name under the mount) to the host directory of pid's cgroup in it: what
// mountCgroup1 binds without a cgroup namespace. Empty on v2, where the
// cgroup mount is a real one CRIU restores itself.
func cgroupBinds(pid int) (map[string]string, error) {
	out := map[string]string{}
	if isCgroup2() {
		return out, nil
	}
	hier, err := v1Hierarchies()
	if err != nil {
		return nil, err
	}
	own, err := cgroupsOf(pid)
	if err != nil {
		return nil, err
	}
	for _, h := range hier {
		path, ok := ownPathIn(own, h.options)
		if !ok {
			continue
		}
		rel, err := filepath.Rel(h.root, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		out[filepath.Base(h.mountpoint)] = filepath.Join(h.mountpoint, rel)
	}
	return out, nil
}

// cgroupsOf is /proc/<pid>/cgroup as controllers -> path ("" for v2).
func cgroupsOf(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out, nil
}

// freezerOf is the freezer cgroup directory pid is in: the v1 freezer
// hierarchy's, or its v2 cgroup's.
func freezerOf(pid int) (string, error) {
	own, err := cgroupsOf(pid)
	if err != nil {
		return "", err
	}
	if isCgroup2() {
		return filepath.Join(hostCgroupRoot, own[""]), nil
	}
	for ctrls, path := range own {
		for _, c := range strings.Split(ctrls, ",") {
			if c == "freezer" {
				return filepath.Join(hostCgroupRoot, "freezer", path), nil
			}
		}
	}
	return "", fmt.Errorf("process %d has no freezer cgroup", pid)
}

// allDevices are the device nodes a container gets: the default ones and
// the spec's. Where the helper could not mknod them (a user namespace)
// they are binds of the host's nodes, hence external.
func allDevices(spec *specs.Spec) []string {
	out := []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}
	if spec.Linux != nil {
		for _, d := range spec.Linux.Devices {
			if d.Path != "" {
				out = append(out, d.Path)
			}
		}
	}
	return out
}

func isCgroup2() bool {
	var st unix.Statfs_t
	return unix.Statfs(hostCgroupRoot, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

func (c *Container) hasNamespace(t specs.LinuxNamespaceType) bool {
	if c.spec.Linux == nil {
		return false
	}
	for _, ns := range c.spec.Linux.Namespaces {
		if ns.Type == t {
			return true
		}
	}
	return false
}

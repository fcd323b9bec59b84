package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// The spec's "cgroup" mount (ctr and CRI put one at /sys/fs/cgroup) shows
// the container its own cgroup, the way runc does on the same host:
//
//   - cgroup v1 / hybrid: a tmpfs, and in it one directory per v1
//     hierarchy of the host (cpu, memory, name=systemd, ...). Without a
//     cgroup namespace each is a bind mount of the container's own cgroup
//     in that hierarchy; with one, a fresh mount of the hierarchy, whose
//     root the namespace makes the container's cgroup. The v2 "unified"
//     part of a hybrid host is left out, as runc does. Symlinks of the
//     host's /sys/fs/cgroup (cpu -> cpu,cpuacct) are repeated.
//   - cgroup v2: a cgroup2 mount, whose root is the container's cgroup
//     inside a cgroup namespace and the host's root without one (a user
//     namespace without a cgroup namespace cannot mount it: a bind mount
//     of the host's /sys/fs/cgroup).
//
// Read-only follows the mount's options ("ro" unless privileged): the
// hierarchies get the mount's flags; the v1 tmpfs holding them stays
// writable, as runc leaves it (the integration test compares the two).
//
// The helper runs this after the parent moved it into the container's
// cgroup (Options.OnSpawn), so /proc/self/cgroup names that cgroup.

const hostCgroupRoot = "/sys/fs/cgroup"

// mountCgroup makes the cgroup mount at dest inside the root and returns
// it (see inRoot).
func mountCgroup(r *inRoot, dest string, flags int, cgroupns bool) (*os.File, error) {
	target, err := r.target(dest, true)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	var st unix.Statfs_t
	if err := unix.Statfs(hostCgroupRoot, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return mountCgroup2(r, dest, target, flags, cgroupns)
	}
	return mountCgroup1(r, dest, target, flags, cgroupns)
}

// mountCgroup2 mounts cgroup2, as runc does with or without a cgroup
// namespace (without one the container sees the host's hierarchy, as
// under runc). A user namespace without a cgroup namespace of its own may
// not mount cgroup2: the host's hierarchy is bound instead.
func mountCgroup2(r *inRoot, dest string, target *os.File, flags int, cgroupns bool) (*os.File, error) {
	mnt, err := r.mount(dest, "cgroup2", target, "cgroup2", uintptr(flags), "")
	if cgroupns || (err != unix.EPERM && err != unix.EBUSY) {
		return mnt, err
	}
	if mnt, err = r.mount(dest, hostCgroupRoot, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return nil, err
	}
	return mnt, remountCgroup(mnt, flags)
}

// cgroupMount is one v1 hierarchy mounted on the host.
type cgroupMount struct {
	mountpoint string   // e.g. /sys/fs/cgroup/cpu,cpuacct
	root       string   // the mount's root within the hierarchy, usually /
	options    []string // super options naming the hierarchy: cpu,cpuacct or name=systemd
}

// mountCgroup1 mounts a tmpfs and, in it, one directory per hierarchy.
// The tmpfs is new and the helper's alone, so paths below it (reached
// through its fd) are safe to use.
func mountCgroup1(r *inRoot, dest string, tmpfsTarget *os.File, flags int, cgroupns bool) (*os.File, error) {
	hier, err := v1Hierarchies()
	if err != nil {
		return nil, err
	}
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	tmpfsFlags := flags &^ unix.MS_RDONLY
	mnt, err := r.mount(dest, "tmpfs", tmpfsTarget, "tmpfs", uintptr(tmpfsFlags), "mode=755")
	if err != nil {
		return nil, fmt.Errorf("tmpfs for cgroup hierarchies: %w", err)
	}
	if err := fillCgroup1(fdPath(mnt), hier, own, flags, cgroupns); err != nil {
		mnt.Close()
		return nil, err
	}
	return mnt, nil
}

func fillCgroup1(dest string, hier []cgroupMount, own map[string]string, flags int, cgroupns bool) error {
	for _, h := range hier {
		target := filepath.Join(dest, filepath.Base(h.mountpoint))
		if err := os.Mkdir(target, 0o755); err != nil {
			return err
		}
		if cgroupns {
			// Same options as the host's superblock, so the kernel
			// hands out that hierarchy, rooted at our namespace.
			if err := unix.Mount("cgroup", target, "cgroup", uintptr(flags), strings.Join(h.options, ",")); err != nil {
				return fmt.Errorf("mount cgroup hierarchy %s: %w", strings.Join(h.options, ","), err)
			}
			continue
		}
		path, ok := ownPathIn(own, h.options)
		if !ok {
			continue // a hierarchy we are not in cannot be shown
		}
		rel, err := filepath.Rel(h.root, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // our cgroup lies outside what the host mounted
		}
		if err := bindCgroup(filepath.Join(h.mountpoint, rel), target, flags); err != nil {
			return err
		}
	}
	// Links such as cpu -> cpu,cpuacct, as the host has them.
	if ents, err := os.ReadDir(hostCgroupRoot); err == nil {
		for _, e := range ents {
			if e.Type()&os.ModeSymlink == 0 {
				continue
			}
			if to, err := os.Readlink(filepath.Join(hostCgroupRoot, e.Name())); err == nil && !filepath.IsAbs(to) {
				os.Symlink(to, filepath.Join(dest, e.Name()))
			}
		}
	}
	return nil
}

func bindCgroup(src, dest string, flags int) error {
	if err := unix.Mount(src, dest, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	rest := flags &^ (unix.MS_BIND | unix.MS_REC)
	if rest == 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dest, &st); err != nil {
		return err
	}
	if err := unix.Mount("", dest, "", uintptr(rest|unix.MS_BIND|unix.MS_REMOUNT|statfsFlags(st)), ""); err != nil {
		return fmt.Errorf("remount %s: %w", dest, err)
	}
	return nil
}

// remountCgroup applies flags to the bind of a cgroup directory.
func remountCgroup(mnt *os.File, flags int) error {
	rest := flags &^ (unix.MS_BIND | unix.MS_REC)
	if rest == 0 {
		return nil
	}
	if err := remountBind(mnt, rest); err != nil {
		mnt.Close()
		return fmt.Errorf("remount the cgroup: %w", err)
	}
	return nil
}

// v1Hierarchies lists the cgroup v1 mounts directly below /sys/fs/cgroup.
func v1Hierarchies() ([]cgroupMount, error) {
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.FSType != "cgroup" || filepath.Dir(m.Mountpoint) != hostCgroupRoot, false
	})
	if err != nil {
		return nil, err
	}
	var out []cgroupMount
	seen := map[string]bool{}
	for _, m := range mounts {
		if seen[m.Mountpoint] {
			continue
		}
		var opts []string
		for _, o := range strings.Split(m.VFSOptions, ",") {
			if o != "rw" && o != "ro" {
				opts = append(opts, o)
			}
		}
		seen[m.Mountpoint] = true
		out = append(out, cgroupMount{mountpoint: m.Mountpoint, root: m.Root, options: opts})
	}
	return out, nil
}

// ownCgroups reads /proc/self/cgroup: controller list ("cpu,cpuacct",
// "name=systemd", "" for v2) to path.
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out, nil
}

// ownPathIn finds our path in the hierarchy named by a mount's options.
func ownPathIn(own map[string]string, options []string) (string, bool) {
	for ctrls, path := range own {
		if ctrls == "" {
			continue
		}
		for _, c := range strings.Split(ctrls, ",") {
			for _, o := range options {
				if c == o {
					return path, true
				}
			}
		}
	}
	return "", false
}

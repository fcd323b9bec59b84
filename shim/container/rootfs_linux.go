package container

import (
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/internal/mountpoint"
	"golang.org/x/sys/unix"
)

// setupRootfs runs in the helper, in its own mount namespace, and leaves
// it pivoted into the container's root: mounts, /dev, the runtime's hooks
// (beforePivot), pivot_root, then hostname and sysctls (afterPivot),
// read-only and masked paths, a read-only root.
// trees holds, by index in spec.Mounts, detached mounts to attach.
func setupRootfs(spec *specs.Spec, rootfs string, noPivot bool, trees map[int]int, beforePivot, afterPivot func() error) error {
	prop, err := privateRootfs(spec, rootfs)
	if err != nil {
		return err
	}
	r, err := openInRoot(rootfs)
	if err != nil {
		return err
	}
	defer r.close()
	if err := buildMounts(r, spec, trees); err != nil {
		return err
	}
	if beforePivot != nil {
		if err := beforePivot(); err != nil {
			return err
		}
	}
	if err := enterRoot(rootfs, noPivot); err != nil {
		return err
	}
	if spec.Linux.RootfsPropagation != "" && prop&(unix.MS_SHARED|unix.MS_SLAVE) != 0 {
		if err := unix.Mount("", "/", "", uintptr(prop), ""); err != nil {
			return fmt.Errorf("set rootfsPropagation %s on the new root: %w", spec.Linux.RootfsPropagation, err)
		}
	}
	// Sysctls go through /proc/sys, which is about to become read-only.
	if afterPivot != nil {
		if err := afterPivot(); err != nil {
			return err
		}
	}
	return protectPaths(spec)
}

// privateRootfs makes the helper's mount namespace private (or what
// rootfsPropagation says), so nothing mounted leaks back to the host, and
// binds the rootfs onto itself, as pivot_root needs. It returns the
// propagation flags to set on the new root afterwards.
func privateRootfs(spec *specs.Spec, rootfs string) (int, error) {
	prop := unix.MS_PRIVATE | unix.MS_REC
	if p := spec.Linux.RootfsPropagation; p != "" {
		f, ok := propagationFlags[p]
		if !ok {
			return 0, fmt.Errorf("unknown rootfsPropagation %q", p)
		}
		prop = f
	}
	if err := unix.Mount("", "/", "", uintptr(prop), ""); err != nil {
		return 0, fmt.Errorf("set mount propagation of /: %w", err)
	}
	// pivot_root refuses a new root, or a parent of it, that is shared
	// (EINVAL). The parent of the self-bind below is the mount at rootfs
	// (the shim's mount of the snapshot) or the one containing it: make it
	// private in our namespace. A shared or slave rootfsPropagation is
	// applied to the new / right after the switch.
	if under, err := mountpoint.Of(rootfs); err == nil {
		if err := unix.Mount("", under, "", unix.MS_PRIVATE, ""); err != nil {
			return 0, fmt.Errorf("make the mount under the rootfs (%s) private: %w", under, err)
		}
	}
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return 0, fmt.Errorf("bind rootfs onto itself: %w", err)
	}
	return prop, nil
}

// buildMounts makes the spec's mounts, /dev and its devices inside the
// root, by fd. A /dev bound from elsewhere (a host's, for a privileged
// pod) is left as it is, as runc does: its nodes are not the container's
// to replace.
func buildMounts(r *inRoot, spec *specs.Spec, trees map[int]int) error {
	devIsTmpfs, devIsBind := false, false
	cgroupns := false
	for _, ns := range spec.Linux.Namespaces {
		cgroupns = cgroupns || ns.Type == specs.CgroupNamespace
	}
	for i, m := range spec.Mounts {
		if fd, ok := trees[i]; ok {
			if err := attachMount(r, m, fd); err != nil {
				return err
			}
		} else if err := mountOne(r, m, cgroupns); err != nil {
			return err
		}
		if cleanDest(m.Destination) == "/dev" {
			devIsTmpfs, devIsBind = !isBind(m), isBind(m)
		}
	}
	if devIsTmpfs {
		if err := populateDev(r); err != nil {
			return err
		}
	}
	for _, d := range spec.Linux.Devices {
		if devIsBind {
			break
		}
		if err := createDevice(r, d); err != nil {
			return err
		}
	}
	// The new root itself must not be shared either (see privateRootfs).
	if err := unix.Mount("", fdPath(r.dir), "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make rootfs private: %w", err)
	}
	if !devIsBind && (spec.Process != nil && spec.Process.Terminal || devIsTmpfs) {
		return linkPtmx(r)
	}
	return nil
}

// protectPaths applies, inside the new root, read-only paths, then masks
// (runc's order, so that the mount tables of the two runtimes compare
// equal), then a read-only root.
func protectPaths(spec *specs.Spec) error {
	for _, p := range spec.Linux.ReadonlyPaths {
		if err := readonlyPath(p); err != nil {
			return err
		}
	}
	if len(spec.Linux.MaskedPaths) > 0 {
		devNull, err := openDevNull()
		if err != nil {
			return err
		}
		defer devNull.Close()
		if err := maskPaths(spec.Linux.MaskedPaths, devNull); err != nil {
			return err
		}
	}
	if spec.Root.Readonly {
		if err := remountReadonly("/"); err != nil {
			return fmt.Errorf("make rootfs read-only: %w", err)
		}
	}
	return nil
}

func maskPaths(paths []string, devNull *os.File) error {
	for _, p := range paths {
		if err := maskPath(p, devNull); err != nil {
			return err
		}
	}
	return nil
}

var propagationFlags = map[string]int{
	"private":     unix.MS_PRIVATE,
	"rprivate":    unix.MS_PRIVATE | unix.MS_REC,
	"shared":      unix.MS_SHARED,
	"rshared":     unix.MS_SHARED | unix.MS_REC,
	"slave":       unix.MS_SLAVE,
	"rslave":      unix.MS_SLAVE | unix.MS_REC,
	"unbindable":  unix.MS_UNBINDABLE,
	"runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// enterRoot makes rootfs the root of the mount namespace. With pivot_root
// the old root is stacked under the new one and then lazily detached, so
// no host path stays reachable. noPivot (initramfs hosts) moves the
// rootfs over / and chroots instead.
func enterRoot(rootfs string, noPivot bool) error {
	if noPivot {
		if err := unix.Chdir(rootfs); err != nil {
			return err
		}
		if err := unix.Mount(rootfs, "/", "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move rootfs to /: %w", err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("chroot: %w", err)
		}
		return unix.Chdir("/")
	}
	oldRoot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(oldRoot)
	newRoot, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(newRoot)
	if err := unix.Fchdir(newRoot); err != nil {
		return err
	}
	// pivot_root(".", ".") puts the old root on top of the new one at the
	// same place (see pivot_root(2)); no temporary directory is needed.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root into %s: %w", rootfs, err)
	}
	if err := unix.Fchdir(oldRoot); err != nil {
		return err
	}
	// The old root must not propagate the detach to the host's mounts.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root slave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}

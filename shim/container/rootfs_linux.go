package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// setupRootfs runs in the helper, in its own mount namespace, and leaves
// it chrooted (pivoted) into the container's root.
// trees holds, by index in spec.Mounts, detached mounts to attach.
func setupRootfs(spec *specs.Spec, rootfs string, noPivot bool, trees map[int]int, beforePivot, afterPivot func() error) error {
	prop := unix.MS_PRIVATE | unix.MS_REC
	if p := spec.Linux.RootfsPropagation; p != "" {
		f, ok := propagationFlags[p]
		if !ok {
			return fmt.Errorf("unknown rootfsPropagation %q", p)
		}
		prop = f
	}
	// Nothing we mount may leak back to the host: first make the whole
	// tree private (or what the spec asks for) in our namespace.
	if err := unix.Mount("", "/", "", uintptr(prop), ""); err != nil {
		return fmt.Errorf("set mount propagation of /: %w", err)
	}
	// pivot_root refuses a new root, or a parent of it, that is shared
	// (EINVAL). The parent of the self-bind below is the mount at rootfs
	// (the shim's mount of the snapshot) or the one containing it: make it
	// private in our namespace. A shared or slave rootfsPropagation is
	// applied to the new / right after the switch.
	if under, err := mountPointOf(rootfs); err == nil {
		if err := unix.Mount("", under, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make the mount under the rootfs (%s) private: %w", under, err)
		}
	}
	// pivot_root needs the new root to be a mount point.
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs onto itself: %w", err)
	}
	devIsTmpfs := false
	cgroupns := false
	for _, ns := range spec.Linux.Namespaces {
		cgroupns = cgroupns || ns.Type == specs.CgroupNamespace
	}
	for i, m := range spec.Mounts {
		if fd, ok := trees[i]; ok {
			if err := attachMount(rootfs, m, fd); err != nil {
				return err
			}
		} else if err := mountOne(rootfs, m, cgroupns); err != nil {
			return err
		}
		if filepath.Clean(m.Destination) == "/dev" && !isBind(m) {
			devIsTmpfs = true
		}
	}
	if devIsTmpfs {
		if err := populateDev(rootfs); err != nil {
			return err
		}
	}
	for _, d := range spec.Linux.Devices {
		if err := createDevice(rootfs, d); err != nil {
			return err
		}
	}
	// The new root itself must not be shared either (see above).
	if err := unix.Mount("", rootfs, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make rootfs private: %w", err)
	}
	if spec.Process != nil && spec.Process.Terminal || devIsTmpfs {
		// /dev/ptmx must be the container's devpts instance.
		ptmx, err := resolveInRoot(rootfs, "/dev/ptmx")
		if err == nil {
			if _, err := os.Stat(filepath.Join(rootfs, "dev/pts/ptmx")); err == nil {
				os.Remove(ptmx)
				if err := os.Symlink("pts/ptmx", ptmx); err != nil {
					return fmt.Errorf("symlink /dev/ptmx: %w", err)
				}
			}
		}
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
	// Read-only paths first, then masks (runc's order, so that the mount
	// tables of the two runtimes compare equal).
	for _, p := range spec.Linux.ReadonlyPaths {
		if err := readonlyPath(p); err != nil {
			return err
		}
	}
	for _, p := range spec.Linux.MaskedPaths {
		if err := maskPath(p); err != nil {
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

type flagOpt struct {
	clear bool
	flag  int
}

var mountFlags = map[string]flagOpt{
	"defaults":      {false, 0},
	"ro":            {false, unix.MS_RDONLY},
	"rw":            {true, unix.MS_RDONLY},
	"suid":          {true, unix.MS_NOSUID},
	"nosuid":        {false, unix.MS_NOSUID},
	"dev":           {true, unix.MS_NODEV},
	"nodev":         {false, unix.MS_NODEV},
	"exec":          {true, unix.MS_NOEXEC},
	"noexec":        {false, unix.MS_NOEXEC},
	"sync":          {false, unix.MS_SYNCHRONOUS},
	"async":         {true, unix.MS_SYNCHRONOUS},
	"dirsync":       {false, unix.MS_DIRSYNC},
	"mand":          {false, unix.MS_MANDLOCK},
	"nomand":        {true, unix.MS_MANDLOCK},
	"atime":         {true, unix.MS_NOATIME},
	"noatime":       {false, unix.MS_NOATIME},
	"diratime":      {true, unix.MS_NODIRATIME},
	"nodiratime":    {false, unix.MS_NODIRATIME},
	"relatime":      {false, unix.MS_RELATIME},
	"norelatime":    {true, unix.MS_RELATIME},
	"strictatime":   {false, unix.MS_STRICTATIME},
	"nostrictatime": {true, unix.MS_STRICTATIME},
	"bind":          {false, unix.MS_BIND},
	"rbind":         {false, unix.MS_BIND | unix.MS_REC},
}

// parseOptions splits mount options into flags, propagation flags and
// the data string handed to the filesystem.
// recursiveAttrs are the runtime spec's recursive mount options, applied
// with mount_setattr(AT_RECURSIVE) to the mount and everything below it:
// what is set and cleared (atime options also clear the atime mask).
var recursiveAttrs = map[string]struct{ set, clr uint64 }{
	"rro": {set: unix.MOUNT_ATTR_RDONLY}, "rrw": {clr: unix.MOUNT_ATTR_RDONLY},
	"rnosuid": {set: unix.MOUNT_ATTR_NOSUID}, "rsuid": {clr: unix.MOUNT_ATTR_NOSUID},
	"rnodev": {set: unix.MOUNT_ATTR_NODEV}, "rdev": {clr: unix.MOUNT_ATTR_NODEV},
	"rnoexec": {set: unix.MOUNT_ATTR_NOEXEC}, "rexec": {clr: unix.MOUNT_ATTR_NOEXEC},
	"rnodiratime": {set: unix.MOUNT_ATTR_NODIRATIME}, "rdiratime": {clr: unix.MOUNT_ATTR_NODIRATIME},
	"rrelatime":      {set: unix.MOUNT_ATTR_RELATIME, clr: unix.MOUNT_ATTR__ATIME},
	"rnorelatime":    {clr: unix.MOUNT_ATTR__ATIME},
	"rnoatime":       {set: unix.MOUNT_ATTR_NOATIME, clr: unix.MOUNT_ATTR__ATIME},
	"ratime":         {clr: unix.MOUNT_ATTR__ATIME},
	"rstrictatime":   {set: unix.MOUNT_ATTR_STRICTATIME, clr: unix.MOUNT_ATTR__ATIME},
	"rnostrictatime": {clr: unix.MOUNT_ATTR__ATIME},
	"rnosymfollow":   {set: unix.MOUNT_ATTR_NOSYMFOLLOW}, "rsymfollow": {clr: unix.MOUNT_ATTR_NOSYMFOLLOW},
}

// RecursiveMountOptions lists the recursive options mounts accept.
func RecursiveMountOptions() []string {
	out := make([]string, 0, len(recursiveAttrs))
	for o := range recursiveAttrs {
		out = append(out, o)
	}
	return out
}

func parseOptions(opts []string) (flags int, prop []int, data string) {
	flags, prop, data, _ = parseAllOptions(opts)
	return flags, prop, data
}

// parseAllOptions also returns the recursive attributes to apply.
func parseAllOptions(opts []string) (flags int, prop []int, data string, rattr unix.MountAttr) {
	var d []string
	for _, o := range opts {
		if r, ok := recursiveAttrs[o]; ok {
			rattr.Attr_set = rattr.Attr_set&^r.clr | r.set
			rattr.Attr_clr |= r.clr
			continue
		}
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if p, ok := propagationFlags[o]; ok {
			prop = append(prop, p)
			continue
		}
		d = append(d, o)
	}
	return flags, prop, strings.Join(d, ","), rattr
}

func mountOne(rootfs string, m specs.Mount, cgroupns bool) error {
	dest, err := resolveInRoot(rootfs, m.Destination)
	if err != nil {
		if IsInvalidSpec(err) {
			return invalid("mount %s: %s", m.Destination, err.(*ValidationError).Msg)
		}
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	flags, prop, data, rattr := parseAllOptions(m.Options)
	wrap := func(err error) error {
		return fmt.Errorf("mount %s (%s) on %s: %w", m.Source, m.Type, m.Destination, err)
	}
	switch {
	case isBind(m):
		flags |= unix.MS_BIND
		st, err := os.Stat(m.Source)
		if err != nil {
			return wrap(err)
		}
		if err := makeTarget(dest, st.IsDir()); err != nil {
			return wrap(err)
		}
		if err := unix.Mount(m.Source, dest, "", uintptr(flags&(unix.MS_BIND|unix.MS_REC)), ""); err != nil {
			return wrap(err)
		}
		// Bind mounts ignore per-mount flags until remounted.
		if rest := flags &^ (unix.MS_BIND | unix.MS_REC); rest != 0 {
			if err := unix.Mount("", dest, "", uintptr(rest|unix.MS_BIND|unix.MS_REMOUNT|lockedFlags(dest)), ""); err != nil {
				return wrap(fmt.Errorf("remount with options %v: %w", m.Options, err))
			}
		}
	case m.Type == "cgroup":
		if err := makeTarget(dest, true); err != nil {
			return wrap(err)
		}
		if err := mountCgroup(dest, flags, cgroupns); err != nil {
			return wrap(err)
		}
	default:
		if err := makeTarget(dest, true); err != nil {
			return wrap(err)
		}
		err := unix.Mount(m.Source, dest, m.Type, uintptr(flags), data)
		if err != nil && (m.Type == "sysfs" || m.Type == "mqueue") && (err == unix.EPERM || err == unix.EBUSY) {
			// sysfs needs a net namespace of our own and mqueue an ipc
			// one; without them, show the host's, as runc does.
			host := map[string]string{"sysfs": "/sys", "mqueue": "/dev/mqueue"}[m.Type]
			err = unix.Mount(host, dest, "", unix.MS_BIND|unix.MS_REC, "")
			if err == nil && flags != 0 {
				err = unix.Mount("", dest, "", uintptr(flags|unix.MS_BIND|unix.MS_REMOUNT|lockedFlags(dest)), "")
			}
		}
		if err != nil {
			return wrap(err)
		}
	}
	if rattr.Attr_set != 0 || rattr.Attr_clr != 0 {
		if err := unix.MountSetattr(-1, dest, unix.AT_RECURSIVE, &rattr); err != nil {
			return wrap(fmt.Errorf("recursive mount options %v: %w", m.Options, err))
		}
	}
	for _, p := range prop {
		if err := unix.Mount("", dest, "", uintptr(p), ""); err != nil {
			return wrap(fmt.Errorf("set propagation: %w", err))
		}
	}
	return nil
}

// lockedFlags returns the flags of the mount at path that a bind remount
// must repeat, so that a remount only adds restrictions.
func lockedFlags(path string) int {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0
	}
	f := 0
	for sf, mf := range map[int64]int{
		unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC,
		unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME, unix.ST_RELATIME: unix.MS_RELATIME,
		unix.ST_RDONLY: unix.MS_RDONLY,
	} {
		if st.Flags&sf != 0 {
			f |= mf
		}
	}
	return f
}

func makeTarget(dest string, dir bool) error {
	if dir {
		return os.MkdirAll(dest, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dest, os.O_CREATE|os.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		if errors.Is(err, unix.EISDIR) {
			return nil
		}
		return err
	}
	return f.Close()
}

var defaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0},
}

// populateDev fills a fresh /dev tmpfs with the standard nodes and links.
func populateDev(rootfs string) error {
	mode := os.FileMode(0o666)
	for _, d := range defaultDevices {
		d.FileMode = &mode
		if err := createDevice(rootfs, d); err != nil {
			return err
		}
	}
	links := [][2]string{
		{"/proc/self/fd", "/dev/fd"},
		{"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"},
		{"/proc/self/fd/2", "/dev/stderr"},
	}
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "/dev/core"})
	}
	for _, l := range links {
		dst, err := resolveInRoot(rootfs, l[1])
		if err != nil {
			return err
		}
		if err := os.Symlink(l[0], dst); err != nil && !os.IsExist(err) {
			return fmt.Errorf("symlink %s: %w", l[1], err)
		}
	}
	return nil
}

func createDevice(rootfs string, d specs.LinuxDevice) error {
	dest, err := resolveInRoot(rootfs, d.Path)
	if err != nil {
		return fmt.Errorf("device %s: %w", d.Path, err)
	}
	var typ uint32
	switch d.Type {
	case "c", "u":
		typ = unix.S_IFCHR
	case "b":
		typ = unix.S_IFBLK
	case "p":
		typ = unix.S_IFIFO
	default:
		return fmt.Errorf("device %s: unknown type %q", d.Path, d.Type)
	}
	perm := uint32(0o666)
	if d.FileMode != nil {
		perm = uint32(d.FileMode.Perm())
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	os.Remove(dest)
	err = unix.Mknod(dest, typ|perm, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor))))
	if err == unix.EPERM && typ != unix.S_IFIFO {
		// No mknod (e.g. a nodev mount): bind the host's node instead.
		if err := makeTarget(dest, false); err != nil {
			return err
		}
		host := fmt.Sprintf("/dev/%s", filepath.Base(d.Path))
		if err := unix.Mount(host, dest, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("device %s: bind %s: %w", d.Path, host, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("mknod %s: %w", d.Path, err)
	}
	uid, gid := 0, 0
	if d.UID != nil {
		uid = int(*d.UID)
	}
	if d.GID != nil {
		gid = int(*d.GID)
	}
	if err := unix.Chown(dest, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", d.Path, err)
	}
	return nil
}

// mountPointOf returns the mount point that path lies on (the longest
// mount point that is a prefix of it).
func mountPointOf(path string) (string, error) {
	// Not mountinfo.ParentsFilter: a plain string prefix, it takes /a/b
	// for a mount point above /a/bc.
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		mp := m.Mountpoint
		return path != mp && mp != "/" && !strings.HasPrefix(path, mp+"/"), false
	})
	if err != nil {
		return "", err
	}
	best := ""
	for _, m := range mounts {
		if len(m.Mountpoint) > len(best) {
			best = m.Mountpoint
		}
	}
	if best == "" {
		return "", fmt.Errorf("no mount point above %s", path)
	}
	return best, nil
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

// maskPath hides p: directories get an empty read-only tmpfs, anything
// else /dev/null. Missing paths are fine.
func maskPath(p string) error {
	st, err := os.Stat(p)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	if st.IsDir() {
		// One block and one inode (the root): nothing fits, even after a
		// remount read-write (size=0 would mean no limit). runc's choice;
		// kernels that want two inodes get two.
		err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "nr_blocks=1,nr_inodes=1")
		if err == unix.EINVAL {
			err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "nr_blocks=1,nr_inodes=2")
		}
	} else {
		err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}

func readonlyPath(p string) error {
	if _, err := os.Stat(p); os.IsNotExist(err) {
		return nil
	}
	if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("readonly path %s: %w", p, err)
	}
	if err := remountReadonly(p); err != nil {
		return fmt.Errorf("readonly path %s: %w", p, err)
	}
	return nil
}

func remountReadonly(p string) error {
	return unix.Mount("", p, "", uintptr(unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|lockedFlags(p)), "")
}

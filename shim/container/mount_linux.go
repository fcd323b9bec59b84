package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

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

// cleanDest is a mount destination as a clean absolute path.
func cleanDest(p string) string { return filepath.Clean("/" + p) }

// mountOne makes the spec mount m inside the root (see inRoot).
func mountOne(r *inRoot, m specs.Mount, cgroupns bool) error {
	flags, prop, data, rattr := parseAllOptions(m.Options)
	wrap := func(err error) error {
		if IsInvalidSpec(err) {
			return invalid("mount %s: %s", m.Destination, err.(*ValidationError).Msg)
		}
		return fmt.Errorf("mount %s (%s) on %s: %w", m.Source, m.Type, m.Destination, err)
	}
	if err := checkProcMount(r, m); err != nil {
		return wrap(err)
	}
	var mnt *os.File
	var err error
	switch {
	case isBind(m):
		mnt, err = bindOne(r, m, flags)
	case m.Type == "cgroup":
		mnt, err = mountCgroup(r, m.Destination, flags, cgroupns)
	default:
		mnt, err = mountFs(r, m, flags, data)
	}
	if err != nil {
		return wrap(err)
	}
	defer mnt.Close()
	if rattr.Attr_set != 0 || rattr.Attr_clr != 0 {
		if err := unix.MountSetattr(int(mnt.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &rattr); err != nil {
			return wrap(fmt.Errorf("recursive mount options %v: %w", m.Options, err))
		}
	}
	if err := setPropagation(mnt, prop); err != nil {
		return wrap(err)
	}
	return nil
}

func setPropagation(mnt *os.File, prop []int) error {
	for _, p := range prop {
		if err := unix.Mount("", fdPath(mnt), "", uintptr(p), ""); err != nil {
			return fmt.Errorf("set propagation: %w", err)
		}
	}
	return nil
}

// lxcfsProcFiles are the only paths below /proc a mount may cover: the
// files lxcfs emulates (runc's list).
var lxcfsProcFiles = map[string]bool{
	"/proc/cpuinfo": true, "/proc/diskstats": true, "/proc/meminfo": true, "/proc/stat": true,
	"/proc/swaps": true, "/proc/uptime": true, "/proc/loadavg": true, "/proc/slabinfo": true,
	"/proc/sys/kernel/ns_last_pid": true, "/proc/sys/crypto/fips_enabled": true,
}

// checkProcMount refuses a mount that would put something else than
// procfs at the container's /proc, or cover a path below it (a volume
// there would make the LSM labels and sysctls the helper writes land in
// ordinary files: CVE-2019-16884), judged where the destination resolves
// inside the root; and a proc or sysfs mount whose destination is not a
// plain directory (CVE-2023-28642).
func checkProcMount(r *inRoot, m specs.Mount) error {
	if m.Type == "proc" || m.Type == "sysfs" {
		st, err := os.Lstat(filepath.Join(r.path, cleanDest(m.Destination)))
		if err == nil && !st.IsDir() {
			return invalid("a %s mount must be on a plain directory, and %s is not one", m.Type, m.Destination)
		}
	}
	dest, err := resolveInRoot(r.path, m.Destination)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Join(r.path, "proc"), dest)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil
	}
	switch {
	case rel == "." && m.Type == "proc":
		return nil
	case rel == "." && isBind(m) && isProcfsRoot(m.Source):
		return nil
	case rel == ".":
		return invalid("%s resolves to /proc, where only a proc mount may go", m.Destination)
	case lxcfsProcFiles["/proc/"+rel]:
		return nil
	}
	return invalid("%s resolves to /proc/%s, inside /proc, which a mount may not cover", m.Destination, rel)
}

// isProcfsRoot reports whether path is the root of a procfs mount.
func isProcfsRoot(path string) bool {
	var fs unix.Statfs_t
	var st unix.Stat_t
	return unix.Statfs(path, &fs) == nil && fs.Type == unix.PROC_SUPER_MAGIC &&
		unix.Stat(path, &st) == nil && st.Ino == 1 // procfs' root inode
}

// bindOne binds m's source (a host path, or /proc/self/fd/N that the
// parent opened) onto its destination, then applies its flags, which a
// bind mount ignores until it is remounted.
func bindOne(r *inRoot, m specs.Mount, flags int) (*os.File, error) {
	st, err := os.Stat(m.Source)
	if err != nil {
		return nil, err
	}
	target, err := r.target(m.Destination, st.IsDir())
	if err != nil {
		return nil, err
	}
	defer target.Close()
	mnt, err := r.mount(m.Destination, m.Source, target, "", uintptr(flags&(unix.MS_BIND|unix.MS_REC)), "")
	if err != nil {
		return nil, err
	}
	if rest := flags &^ (unix.MS_BIND | unix.MS_REC); rest != 0 {
		if err := remountBind(mnt, rest); err != nil {
			mnt.Close()
			return nil, fmt.Errorf("remount with options %v: %w", m.Options, err)
		}
	}
	return mnt, nil
}

// remountBind applies flags to the bind mount mnt, keeping the flags it
// already has, so that a remount only adds restrictions.
func remountBind(mnt *os.File, flags int) error {
	return unix.Mount("", fdPath(mnt), "", uintptr(flags|unix.MS_BIND|unix.MS_REMOUNT|lockedFlags(mnt)), "")
}

// mountFs mounts a new filesystem of m's type. sysfs needs a net
// namespace of our own and mqueue an ipc one; without them the host's are
// bound instead, as runc does.
func mountFs(r *inRoot, m specs.Mount, flags int, data string) (*os.File, error) {
	target, err := r.target(m.Destination, true)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	mnt, err := r.mount(m.Destination, m.Source, target, m.Type, uintptr(flags), data)
	if err != nil && (m.Type == "sysfs" || m.Type == "mqueue") && (err == unix.EPERM || err == unix.EBUSY) {
		host := map[string]string{"sysfs": "/sys", "mqueue": "/dev/mqueue"}[m.Type]
		if mnt, err = r.mount(m.Destination, host, target, "", unix.MS_BIND|unix.MS_REC, ""); err == nil && flags != 0 {
			err = remountBind(mnt, flags)
		}
		if err == nil && flags&unix.MS_RDONLY != 0 {
			// A recursive bind keeps the mounts below rw (the host's
			// cgroupfs, bpffs): read-only means all of them.
			err = unix.MountSetattr(int(mnt.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
		}
		if err != nil && mnt != nil {
			mnt.Close()
		}
	}
	return mnt, err
}

// lockedFlags returns the flags of the mount mnt that a bind remount must
// repeat.
func lockedFlags(mnt *os.File) int {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(mnt.Fd()), &st); err != nil {
		return 0
	}
	return statfsFlags(st)
}

func statfsFlags(st unix.Statfs_t) int {
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

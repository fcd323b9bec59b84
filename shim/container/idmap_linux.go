package container

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/shim/container/protocol"
	"golang.org/x/sys/unix"
)

// Idmapped bind mounts: a spec mount with uidMappings/gidMappings shows its
// files with the ids shifted as a user namespace with those mappings would
// (on-disk 0 appears as the mapping's host id 0 maps to, and so on).
//
// Making one needs CAP_SYS_ADMIN over the filesystem's own user namespace
// (the host's), which the helper of a user-namespaced container lacks. So
// the parent makes it: open_tree(OPEN_TREE_CLONE) of the source in its own
// mount namespace, mount_setattr(MOUNT_ATTR_IDMAP) with a user namespace
// holding the mappings, and passes the detached mount to the helper, which
// attaches it with move_mount (a detached tree can join any mount
// namespace its holder may mount in). runc does the same.
//
// The user namespace is the helper's own when its maps are the mount's
// (CRI passes the pod's mappings), else a throwaway one: an init helper
// started with those maps and no configuration, which exits as soon as
// its socket closes.

func isIDMapped(m specs.Mount) bool { return len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0 }

// formatMaps is the text of /proc/<pid>/uid_map for maps, normalized.
func formatMaps(maps []specs.LinuxIDMapping) string {
	var b strings.Builder
	for _, m := range maps {
		fmt.Fprintf(&b, "%d %d %d\n", m.ContainerID, m.HostID, m.Size)
	}
	return b.String()
}

func normalizeMapFile(b []byte) string {
	var out strings.Builder
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		out.WriteString(strings.Join(strings.Fields(string(l)), " ") + "\n")
	}
	return out.String()
}

// idmapUserns returns an open user namespace with the mount's mappings,
// and a function that releases it.
func (c *Container) idmapUserns(helperPid int, m specs.Mount) (*os.File, func(), error) {
	uid, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", helperPid))
	gid, _ := os.ReadFile(fmt.Sprintf("/proc/%d/gid_map", helperPid))
	if normalizeMapFile(uid) == formatMaps(m.UIDMappings) && normalizeMapFile(gid) == formatMaps(m.GIDMappings) {
		f, err := openNs(fmt.Sprintf("/proc/%d/ns/user", helperPid), specs.UserNamespace)
		return f, func() {}, err
	}
	parent, child, err := protocol.NewPair()
	if err != nil {
		return nil, nil, err
	}
	defer parent.Close()
	cmd := &exec.Cmd{
		Path:       c.initPath,
		Args:       []string{"tupper-idmap", c.ID},
		Env:        []string{helperEnv},
		ExtraFiles: []*os.File{child},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: idMaps(m.UIDMappings),
			GidMappings: idMaps(m.GIDMappings),
		},
	}
	wait, err := c.starter(cmd)
	child.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("user namespace for idmapped mount %s: %w", m.Destination, err)
	}
	f, err := openNs(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid), specs.UserNamespace)
	parent.Close() // EOF: it exits without a configuration
	wait()
	cmd.Process.Release()
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// openIDMapped makes the detached idmapped mount of m's source.
func (c *Container) openIDMapped(helperPid int, m specs.Mount) (int, error) {
	userns, release, err := c.idmapUserns(helperPid, m)
	if err != nil {
		return -1, fmt.Errorf("idmapped mount %s: %w", m.Destination, err)
	}
	defer release()
	src, err := filepath.EvalSymlinks(m.Source)
	if err != nil {
		return -1, fmt.Errorf("idmapped mount %s: %w", m.Destination, err)
	}
	if !filepath.IsAbs(src) {
		return -1, fmt.Errorf("idmapped mount %s: source %q is not an absolute path", m.Destination, m.Source)
	}
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	setFlags := uint(unix.AT_EMPTY_PATH)
	for _, o := range m.Options {
		if o == "rbind" {
			flags |= unix.AT_RECURSIVE
			setFlags |= unix.AT_RECURSIVE
		}
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
	if err != nil {
		return -1, fmt.Errorf("idmapped mount %s: open_tree %s: %w", m.Destination, src, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(fd, "", setFlags, attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("idmapped mount %s: mount_setattr %s: %w", m.Destination, src, err)
	}
	return fd, nil
}

// attachMount runs in the helper: it moves the detached (idmapped) mount
// fd onto m's destination inside the root and applies m's flags and
// propagation.
func attachMount(r *inRoot, m specs.Mount, fd int) error {
	wrap := func(err error) error { return fmt.Errorf("idmapped mount %s on %s: %w", m.Source, m.Destination, err) }
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return wrap(err)
	}
	target, err := r.target(m.Destination, st.Mode&unix.S_IFMT == unix.S_IFDIR)
	if err != nil {
		return wrap(err)
	}
	defer target.Close()
	mnt, err := r.moveMount(m.Destination, fd, target)
	if err != nil {
		return wrap(err)
	}
	defer mnt.Close()
	flags, prop, _ := parseOptions(m.Options)
	if rest := flags &^ (unix.MS_BIND | unix.MS_REC); rest != 0 {
		if err := remountBind(mnt, rest); err != nil {
			return wrap(fmt.Errorf("remount with options %v: %w", m.Options, err))
		}
	}
	if err := setPropagation(mnt, prop); err != nil {
		return wrap(err)
	}
	return nil
}

package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

var defaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0},
}

// populateDev fills a fresh /dev tmpfs with the standard nodes and links,
// all made in one open /dev (nothing is mounted on it meanwhile).
func populateDev(r *inRoot) error {
	mode := os.FileMode(0o666)
	links := [][2]string{
		{"/proc/self/fd", "fd"},
		{"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"},
	}
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "core"})
	}
	var binds []string
	err := r.withDir("/dev", func(dir int) error {
		for _, d := range defaultDevices {
			d.FileMode = &mode
			bind, err := makeNode(dir, filepath.Base(d.Path), d)
			if err != nil {
				return fmt.Errorf("device %s: %w", d.Path, err)
			}
			if bind {
				binds = append(binds, d.Path)
			}
		}
		for _, l := range links {
			if err := unix.Symlinkat(l[0], dir, l[1]); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("symlink /dev/%s: %w", l[1], err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, path := range binds {
		if err := bindHostDevice(r, path); err != nil {
			return err
		}
	}
	return nil
}

var deviceTypes = map[string]uint32{"c": unix.S_IFCHR, "u": unix.S_IFCHR, "b": unix.S_IFBLK, "p": unix.S_IFIFO}

// createDevice makes the device node d inside the root, in place of
// whatever the image has there. Where mknod is refused (a nodev mount, a
// user namespace) the host's node is bound instead.
func createDevice(r *inRoot, d specs.LinuxDevice) error {
	var bind bool
	err := r.inDir(d.Path, func(dir int, name string) (err error) {
		bind, err = makeNode(dir, name, d)
		return err
	})
	if err != nil {
		return fmt.Errorf("device %s: %w", d.Path, err)
	}
	if bind {
		return bindHostDevice(r, d.Path)
	}
	return nil
}

// makeNode makes device d as name in the open directory dir, replacing
// what is there without following it; bind reports that mknod was refused
// and the host's node must be bound there instead.
func makeNode(dir int, name string, d specs.LinuxDevice) (bind bool, _ error) {
	typ, ok := deviceTypes[d.Type]
	if !ok {
		return false, fmt.Errorf("unknown type %q", d.Type)
	}
	perm := uint32(0o666)
	if d.FileMode != nil {
		perm = uint32(d.FileMode.Perm())
	}
	uid, gid := 0, 0
	if d.UID != nil {
		uid = int(*d.UID)
	}
	if d.GID != nil {
		gid = int(*d.GID)
	}
	if err := unix.Unlinkat(dir, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, err
	}
	err := unix.Mknodat(dir, name, typ|perm, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor))))
	if err == unix.EPERM && typ != unix.S_IFIFO {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return false, unix.Fchownat(dir, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// bindHostDevice binds the host's /dev/<name> onto path inside the root.
func bindHostDevice(r *inRoot, path string) error {
	host := "/dev/" + filepath.Base(path)
	target, err := r.target(path, false)
	if err != nil {
		return fmt.Errorf("device %s: %w", path, err)
	}
	defer target.Close()
	mnt, err := r.mount(path, host, target, "", unix.MS_BIND, "")
	if err != nil {
		return fmt.Errorf("device %s: bind %s: %w", path, host, err)
	}
	return mnt.Close()
}

// linkPtmx makes /dev/ptmx a link to the container's own devpts instance.
func linkPtmx(r *inRoot) error {
	pts, err := r.open("/dev/pts/ptmx")
	if err != nil {
		return nil // no devpts mounted: leave /dev/ptmx as it is
	}
	pts.Close()
	err = r.inDir("/dev/ptmx", func(dir int, name string) error {
		if err := unix.Unlinkat(dir, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		return unix.Symlinkat("pts/ptmx", dir, name)
	})
	if err != nil {
		return fmt.Errorf("symlink /dev/ptmx: %w", err)
	}
	return nil
}

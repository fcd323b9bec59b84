package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
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

// populateDev fills a fresh /dev tmpfs with the standard nodes and links.
func populateDev(r *inRoot) error {
	mode := os.FileMode(0o666)
	for _, d := range defaultDevices {
		d.FileMode = &mode
		if err := createDevice(r, d); err != nil {
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
		err := inDir(r, l[1], func(dir int, name string) error { return unix.Symlinkat(l[0], dir, name) })
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("symlink %s: %w", l[1], err)
		}
	}
	return nil
}

// inDir runs fn with the directory of p inside the root (made if missing)
// open, and p's last element: for the *at calls that make or remove p
// itself without following it.
func inDir(r *inRoot, p string, fn func(dir int, name string) error) error {
	p = cleanDest(p)
	parent, err := r.mkdirAll(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer parent.Close()
	dir, err := pathrs.Reopen(parent, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer dir.Close()
	return fn(int(dir.Fd()), filepath.Base(p))
}

var deviceTypes = map[string]uint32{"c": unix.S_IFCHR, "u": unix.S_IFCHR, "b": unix.S_IFBLK, "p": unix.S_IFIFO}

// createDevice makes the device node d inside the root, in place of
// whatever the image has there. Where mknod is refused (a nodev mount, a
// user namespace) the host's node is bound instead.
func createDevice(r *inRoot, d specs.LinuxDevice) error {
	typ, ok := deviceTypes[d.Type]
	if !ok {
		return fmt.Errorf("device %s: unknown type %q", d.Path, d.Type)
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
	bind := false
	err := inDir(r, d.Path, func(dir int, name string) error {
		if err := unix.Unlinkat(dir, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		err := unix.Mknodat(dir, name, typ|perm, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor))))
		if err == unix.EPERM && typ != unix.S_IFIFO {
			bind = true
			return nil
		}
		if err != nil {
			return err
		}
		return unix.Fchownat(dir, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		return fmt.Errorf("device %s: %w", d.Path, err)
	}
	if bind {
		return bindHostDevice(r, d.Path)
	}
	return nil
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
	err = inDir(r, "/dev/ptmx", func(dir int, name string) error {
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

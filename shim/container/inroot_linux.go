package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/cyphar/filepath-securejoin/pathrs-lite/procfs"
	"golang.org/x/sys/unix"
)

// inRoot does what the helper does inside the container's root filesystem
// before it pivots there, by fd: every path is resolved with openat2's
// RESOLVE_IN_ROOT (filepath-securejoin's pathrs-lite), so a symlink
// resolves as the container will see it and never leads out of the root,
// and mounts go onto the file that was resolved, through
// /proc/thread-self/fd/N, so a path swapped for a symlink between the
// look-up and the mount (a volume shared with another container) changes
// nothing (CVE-2021-30465). After each mount the mount point is reopened
// by the path the kernel gives it and checked to be where it was asked
// for.
type inRoot struct {
	dir  *os.File // O_PATH, the root
	path string   // the root's path on the host, for messages and checks
}

func openInRoot(path string) (*inRoot, error) {
	// The kernel names the mount points it reports by their real path.
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("the rootfs %s: %w", path, err)
	}
	fd, err := unix.Open(real, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the rootfs %s: %w", path, err)
	}
	return &inRoot{dir: os.NewFile(uintptr(fd), real), path: real}, nil
}

func (r *inRoot) close() { r.dir.Close() }

// fdPath is the magic link through which a path-based call reaches f.
// The helper's thread is locked and /proc is the host's until the pivot.
func fdPath(f *os.File) string { return fmt.Sprintf("/proc/thread-self/fd/%d", f.Fd()) }

// open opens p inside the root (O_PATH), following symlinks inside it.
func (r *inRoot) open(p string) (*os.File, error) {
	return pathrs.OpenatInRoot(r.dir, p)
}

// mkdirAll makes directory p inside the root and returns it (O_PATH).
func (r *inRoot) mkdirAll(p string) (*os.File, error) {
	return pathrs.MkdirAllHandle(r.dir, p, 0o755)
}

// target returns what to mount dest onto, made when missing: a directory,
// or with dir false (a bind of a file) an empty file. A symlink that
// climbs out of the root is refused with a spec error, since the
// container would not see it where it asked for (resolveInRoot).
func (r *inRoot) target(dest string, dir bool) (*os.File, error) {
	if _, err := resolveInRoot(r.path, dest); err != nil {
		return nil, err
	}
	if f, err := r.open(dest); err == nil || !errors.Is(err, os.ErrNotExist) {
		return f, err
	}
	if dir {
		return r.mkdirAll(dest)
	}
	if err := r.createFile(dest, nil, 0o644); err != nil {
		return nil, err
	}
	return r.open(dest)
}

// inDir runs fn with the directory of p inside the root (made if missing)
// open, and p's last element: for the *at calls that make or remove p
// itself without following it.
func (r *inRoot) inDir(p string, fn func(dir int, name string) error) error {
	p = cleanDest(p)
	return r.withDir(filepath.Dir(p), func(dir int) error { return fn(dir, filepath.Base(p)) })
}

// withDir runs fn with directory p inside the root (made if missing) open
// for the *at calls. The O_PATH handle is made usable by opening "." from
// it, which walks nothing: the same directory, without the procfs round
// trip of a general reopen.
func (r *inRoot) withDir(p string, fn func(dir int) error) error {
	handle, err := r.mkdirAll(p)
	if err != nil {
		return err
	}
	defer handle.Close()
	dir, err := unix.Openat(int(handle.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s inside the root: %w", p, err)
	}
	defer unix.Close(dir)
	return fn(dir)
}

// createFile makes a new file at p inside the root with content; whatever
// is there already, a link included, is left alone (EEXIST).
func (r *inRoot) createFile(p string, content []byte, perm uint32) error {
	return r.inDir(p, func(dir int, name string) error {
		fd, err := unix.Openat(dir, name, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, perm)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), name)
		_, err = f.Write(content)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// CreateFileInRoot makes a new file at p inside the root filesystem at
// rootfs, resolved as the container will see it and never out of it (see
// inRoot), unless something is there already: then it fails with EEXIST.
func CreateFileInRoot(rootfs, p string, content []byte, perm uint32) error {
	r, err := openInRoot(rootfs)
	if err != nil {
		return err
	}
	defer r.close()
	return r.createFile(p, content, perm)
}

// mount mounts source onto target, a file open inside the root, and
// returns the mount point reopened: the new mount's root, to apply flags
// and propagation to. dest is where the spec asked for it, inside the root.
func (r *inRoot) mount(dest, source string, target *os.File, fstype string, flags uintptr, data string) (*os.File, error) {
	if err := unix.Mount(source, fdPath(target), fstype, flags, data); err != nil {
		return nil, err
	}
	return r.reopen(dest, target)
}

// moveMount attaches the detached mount tree onto target, then reopens it
// as mount does.
func (r *inRoot) moveMount(dest string, tree int, target *os.File) (*os.File, error) {
	if err := unix.MoveMount(tree, "", int(target.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return nil, fmt.Errorf("move_mount: %w", err)
	}
	return r.reopen(dest, target)
}

// reopen opens again what target's path holds now, after a mount on it,
// and checks that it is the mount point the spec asked for: inside the
// root and at dest, not moved away in the meantime.
func (r *inRoot) reopen(dest string, target *os.File) (*os.File, error) {
	full, err := procfs.ProcSelfFdReadlink(target)
	if err != nil {
		return nil, fmt.Errorf("where the mount on %s went: %w", dest, err)
	}
	rel, ok := strings.CutPrefix(full, r.path+"/")
	if full == r.path {
		rel, ok = "/", true
	}
	if !ok {
		return nil, fmt.Errorf("mount on %s landed outside the rootfs, on %s", dest, full)
	}
	want, err := resolveInRoot(r.path, dest)
	if err != nil {
		return nil, err
	}
	if filepath.Join(r.path, rel) != want {
		return nil, fmt.Errorf("mount target %s moved while it was mounted on (to /%s)", dest, rel)
	}
	f, err := r.open(rel)
	if err != nil {
		return nil, fmt.Errorf("reopen the mount on %s: %w", dest, err)
	}
	if now, err := procfs.ProcSelfFdReadlink(f); err != nil || now != full {
		f.Close()
		return nil, fmt.Errorf("mount target %s moved while it was reopened (%s, %v)", dest, now, err)
	}
	return f, nil
}

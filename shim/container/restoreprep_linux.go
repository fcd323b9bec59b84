//go:build !tupper_nocriu

package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// adopt takes the restored init (CRIU's post-restore: every restored
// process exists and is still stopped) as the container's init.
func (r *restore) adopt(pid int) error {
	if r.init != nil {
		return errors.New("CRIU named a second restored init")
	}
	proc, err := os.FindProcess(pid) // a pidfd: signals never reach a recycled pid
	if err != nil {
		return err
	}
	wait, err := r.c.adopt(pid)
	if err != nil {
		proc.Release()
		return err
	}
	r.init = newProcess(pid, proc, wait, nil)
	r.init.hs = nil // nothing to start: it runs once CRIU lets it go
	r.c.noteTimeNamespace(pid)
	if r.opts.Restored != nil {
		return r.opts.Restored(pid)
	}
	return nil
}

// killRestored kills a restored init whose restore failed after CRIU
// named it (CRIU kills what it restored when it fails itself).
func (r *restore) killRestored() {
	if r.init != nil {
		r.init.Signal(unix.SIGKILL)
		r.init.Wait()
	}
}

// noteTimeNamespace adds a time namespace to the container's spec when
// CRIU restored init into one (it does, to keep its clocks monotonic), so
// that an exec joins it too.
func (c *Container) noteTimeNamespace(pid int) {
	if c.hasNamespace(specs.TimeNamespace) {
		return
	}
	var theirs, ours unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/ns/time", pid), &theirs) != nil || unix.Stat("/proc/self/ns/time", &ours) != nil ||
		theirs.Ino == ours.Ino {
		return
	}
	sp := *c.spec
	l := *sp.Linux
	l.Namespaces = append(append([]specs.LinuxNamespace(nil), l.Namespaces...), specs.LinuxNamespace{Type: specs.TimeNamespace})
	sp.Linux = &l
	c.spec = &sp
}

// savedStdio matches the keys writeDescriptors records: the only saved
// stdio a restore replaces with the new container's. It is compiled at the
// first restore, not at start-up: every helper links this package.
var savedStdio = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^(pipe:\[[0-9]{1,20}\]|file\[[0-9a-f]{1,16}:[0-9a-f]{1,16}\])$`)
})

// stdio gives the restored init the new container's stdio in place of
// what its fds 0-2 were (the image's descriptors.json): pipes, and files
// the old shim opened outside the container. A file with no replacement
// (no stdin) becomes the host's /dev/null, as for a new container.
func (r *restore) stdio(ro *rpc.CriuOpts, images *os.File) error {
	b, err := readImageFile(images, DescriptorsFile, 4096)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var saved []string
	if err := json.Unmarshal(b, &saved); err != nil || len(saved) > 3 {
		return invalid("restore: %s in the checkpoint is not a list of three descriptors", DescriptorsFile)
	}
	now := []*os.File{r.opts.Stdio.Stdin, r.opts.Stdio.Stdout, r.opts.Stdio.Stderr}
	done := map[string]bool{}
	for i, key := range saved {
		if !savedStdio().MatchString(key) || done[key] {
			continue
		}
		f, err := replacement(now[i], strings.HasPrefix(key, "file["))
		if err != nil {
			return err
		}
		if f != nil {
			done[key] = true
			r.inherit(ro, key, f)
		}
	}
	return nil
}

// replacement is a file of our own for CRIU to put in place of a saved
// one: a copy of now, or /dev/null for a file without one. CRIU restores
// a saved file's offset, so a pipe cannot stand in for a file: the
// process keeps the null device there (a container checkpointed with
// null stdio, restored with pipes).
func replacement(now *os.File, isFile bool) (*os.File, error) {
	if now != nil && isFile {
		if _, err := unix.Seek(int(now.Fd()), 0, unix.SEEK_CUR); err != nil {
			now = nil
		}
	}
	if now == nil {
		if !isFile {
			return nil, nil // CRIU makes the pipe again
		}
		return os.OpenFile("/dev/null", os.O_RDWR, 0)
	}
	fd, err := unix.FcntlInt(now.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), now.Name()), nil
}

// readImageFile reads name, a regular file of at most max bytes, from a
// checkpoint image directory, which a caller we do not trust filled: a
// link is not followed and a FIFO does not block.
func readImageFile(dir *os.File, name string, max int64) ([]byte, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(dir.Name(), name), Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > max {
		return nil, invalid("%s in the checkpoint is not a regular file of at most %d bytes", name, max)
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// ReadImageFile is readImageFile for a directory given by path.
func ReadImageFile(imageDir, name string, max int64) ([]byte, error) {
	d, err := openDir(imageDir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return readImageFile(d, name, max)
}

// makeMountTargets makes, inside the rootfs and by fd, the mount points
// the spec's mounts need, as Create's helper would: CRIU mounts onto
// them but does not make them. Paths below a tmpfs come back with it, and
// the cgroup mount's with its tmpfs or /sys.
func (c *Container) makeMountTargets() error {
	r, err := openInRoot(c.rootfs)
	if err != nil {
		return err
	}
	defer r.close()
	var tmpfs []string
	for _, m := range c.spec.Mounts {
		if m.Type == "tmpfs" && !isBind(m) {
			tmpfs = append(tmpfs, cleanDest(m.Destination))
		}
	}
	for _, m := range c.spec.Mounts {
		dest := cleanDest(m.Destination)
		if m.Type == "cgroup" || below(dest, tmpfs) {
			continue
		}
		dir := true
		if isBind(m) {
			if st, err := os.Stat(m.Source); err == nil && !st.IsDir() {
				dir = false
			}
		}
		f, err := r.target(dest, dir)
		if err != nil && !errors.Is(err, unix.EROFS) {
			return fmt.Errorf("restore: mount point %s: %w", dest, err)
		}
		if f != nil {
			f.Close()
		}
	}
	return nil
}

// below reports whether p lies strictly below one of dirs.
func below(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// bindRootForCriu binds the rootfs onto a directory of its own for
// CRIU, which wants its root to be a mount point whose parent nothing
// covers; the bind lives in our mount namespace only until the restore
// is done (the restored container has its own copy).
func bindRootForCriu(rootfs string) (string, func(), error) {
	dir, err := os.MkdirTemp(filepath.Dir(rootfs), ".criu-root-")
	if err != nil {
		return "", nil, err
	}
	if err := unix.Mount(rootfs, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("restore: bind the rootfs for CRIU: %w", err)
	}
	unix.Mount("", dir, "", unix.MS_PRIVATE|unix.MS_REC, "")
	return dir, func() {
		unix.Unmount(dir, unix.MNT_DETACH)
		os.Remove(dir)
	}, nil
}

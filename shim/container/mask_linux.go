package container

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openDevNull opens the container's /dev/null, which masked files are
// bound from, and refuses it unless it is the null device: without a /dev
// of the spec's, it is whatever the image put there, and a link to a
// /proc/sys file would make every masked file a writable view of that
// file. It runs in the new root, where the host's is gone.
func openDevNull() (*os.File, error) {
	f, err := os.OpenFile("/dev/null", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/null in the container: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		f.Close()
		return nil, invalid("the container's /dev/null is not the null device (character device 1:3), so paths cannot be masked with it")
	}
	return f, nil
}

// maskPath hides p, inside the new root: directories get an empty
// read-only tmpfs, anything else a bind of devNull (as under runc; a
// write to it goes nowhere). Missing paths are fine. p is mounted on by
// fd, once opened.
func maskPath(p string, devNull *os.File) error {
	f, err := os.OpenFile(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	target := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if st.IsDir() {
		// One block and one inode (the root): nothing fits, even after a
		// remount read-write (size=0 would mean no limit). runc's choice;
		// kernels that want two inodes get two.
		err = unix.Mount("tmpfs", target, "tmpfs", unix.MS_RDONLY, "nr_blocks=1,nr_inodes=1")
		if err == unix.EINVAL {
			err = unix.Mount("tmpfs", target, "tmpfs", unix.MS_RDONLY, "nr_blocks=1,nr_inodes=2")
		}
	} else {
		err = unix.Mount(fmt.Sprintf("/proc/self/fd/%d", devNull.Fd()), target, "", unix.MS_BIND, "")
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
	var st unix.Statfs_t
	flags := 0
	if err := unix.Statfs(p, &st); err == nil {
		flags = statfsFlags(st)
	}
	return unix.Mount("", p, "", uintptr(unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|flags), "")
}

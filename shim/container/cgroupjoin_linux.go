package container

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// checkCgroupJoined runs in the helper: each fd is a "tasks" file its
// constructor wrote "0" to, which must now list the helper. The fds are
// closed, so the container's program never sees them.
func checkCgroupJoined(fds []int) error {
	self := strconv.Itoa(os.Getpid())
	for _, fd := range fds {
		listed, err := listsTask(fd, self)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("reading cgroup tasks (fd %d): %w", fd, err)
		}
		if !listed {
			return fmt.Errorf("the init helper is not in its cgroup (fd %d): the init helper binary must import github.com/tupper/tupper/shim/nsenter", fd)
		}
	}
	return nil
}

func listsTask(fd int, tid string) (bool, error) {
	var b []byte
	buf := make([]byte, 4096)
	for off := int64(0); ; {
		n, err := unix.Pread(fd, buf, off)
		if err != nil {
			return false, err
		}
		if n == 0 {
			break
		}
		b = append(b, buf[:n]...)
		off += int64(n)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l == tid {
			return true, nil
		}
	}
	return false, nil
}

// joinsCgroupNs reports whether the parent's thread joins a cgroup
// namespace before it starts the helper.
func joinsCgroupNs(joins []nsJoin) bool {
	for _, j := range joins {
		if j.typ == specs.CgroupNamespace {
			return true
		}
	}
	return false
}

// moveToCgroupDir moves pid into the cgroup v2 directory dir.
func moveToCgroupDir(dir *os.File, pid int) error {
	fd, err := unix.Openat(int(dir.Fd()), "cgroup.procs", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", dir.Name(), err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(strconv.Itoa(pid))); err != nil {
		return fmt.Errorf("moving the helper into cgroup %s: %w", dir.Name(), err)
	}
	return nil
}

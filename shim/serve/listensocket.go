package serve

import (
	"os"

	"golang.org/x/sys/unix"
)

// ListenSocket is the shim's listening socket file, which `start` made and
// passed as fd 3 (the daemon serves on that fd). It is not safe for
// concurrent use: a service calls Remove under its own lock.
type ListenSocket struct {
	path     string
	dev, ino uint64
	removed  bool
}

// OwnSocket identifies the socket on fd 3 while it is still there
// (a NewService runs before the daemon serves on it): its path and the
// file's identity, so that removing it later never removes a socket
// another shim has since made at the same path. nil if fd 3 is no
// listening unix socket with a path.
func OwnSocket() *ListenSocket {
	if v, err := unix.GetsockoptInt(3, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return nil
	}
	sa, err := unix.Getsockname(3)
	if err != nil {
		return nil
	}
	un, ok := sa.(*unix.SockaddrUnix)
	if !ok || un.Name == "" || un.Name[0] == '@' || un.Name[0] == 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(un.Name, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil
	}
	return &ListenSocket{path: un.Name, dev: st.Dev, ino: st.Ino}
}

// Remove deletes the socket file if it is still ours. The shim does this
// when it decides to shut down, before it answers Shutdown: containerd's
// Delete returns right after that answer, and the socket must be gone by
// then (containerd's TestShimDoesNotLeakSockets), and the shutdown
// callbacks (event queue drain, background veth deletion) can take longer
// than the caller's next step. A shutdown callback removes it too, for a
// shim stopped by SIGTERM.
// It removes at most once: after that the path may be another shim's,
// and a file system that reuses inode numbers could give its socket ours.
func (l *ListenSocket) Remove() {
	if l == nil || l.removed {
		return
	}
	l.removed = true
	var st unix.Stat_t
	if err := unix.Stat(l.path, &st); err != nil || st.Dev != l.dev || st.Ino != l.ino {
		return
	}
	os.Remove(l.path)
}

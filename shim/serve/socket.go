package serve

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
)

const unixScheme = "unix://"

// maxSocketPath is sun_path's size less its terminating NUL.
const maxSocketPath = 107

// SocketAddress is the unix:// address of the shim serving name in ctx's
// namespace for the containerd at containerdAddress: a hash under dir, so
// that its length never depends on what the names hold, as containerd's
// own shims name theirs.
func SocketAddress(ctx context.Context, dir, containerdAddress, name string) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(filepath.Join(containerdAddress, ns, name)))
	addr := fmt.Sprintf("%s%s/%x", unixScheme, dir, sum)
	if len(socketPath(addr)) > maxSocketPath {
		return "", fmt.Errorf("shim socket path %s: longer than %d bytes", socketPath(addr), maxSocketPath)
	}
	return addr, nil
}

// socketPath is addr's file path; addr must be a unix:// address.
func socketPath(addr string) string { return strings.TrimPrefix(addr, unixScheme) }

func checkAddress(addr string) error {
	if !strings.HasPrefix(addr, unixScheme) {
		return fmt.Errorf("shim address %q: not a unix:// address", addr)
	}
	return nil
}

// Listen makes the socket file at addr (its directory 0700, the socket
// 0600: only containerd's user may connect) and listens on it.
func Listen(addr string) (*net.UnixListener, error) {
	if err := checkAddress(addr); err != nil {
		return nil, err
	}
	path := socketPath(addr)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// AddrInUse reports whether Listen failed because a socket file is
// already there.
func AddrInUse(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "listen" && errors.Is(err, syscall.EADDRINUSE)
}

// RemoveSocket removes the socket file at addr.
func RemoveSocket(addr string) error {
	if err := checkAddress(addr); err != nil {
		return err
	}
	return os.Remove(socketPath(addr))
}

// RemoveIfNotListening removes the socket file at addr when connecting
// to it is refused, that is when no process listens on it. Anything
// else (a listener, a full backlog, no such file, not a socket) leaves
// it alone.
func RemoveIfNotListening(addr string) error {
	if err := checkAddress(addr); err != nil {
		return err
	}
	path := socketPath(addr)
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
		return nil
	}
	conn, err := Dial(addr, 100*time.Millisecond)
	if err == nil {
		return conn.Close()
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Dial connects to the shim at addr.
func Dial(addr string, timeout time.Duration) (net.Conn, error) {
	if err := checkAddress(addr); err != nil {
		return nil, err
	}
	return net.DialTimeout("unix", socketPath(addr), timeout)
}

// CanConnect reports whether something accepts connections at addr.
func CanConnect(addr string) bool {
	conn, err := Dial(addr, 100*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

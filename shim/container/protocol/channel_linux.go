package protocol

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// MaxFds is the most descriptors one message carries (the kernel's
// SCM_MAX_FD).
const MaxFds = 253

// maxMessage bounds one record; a spec is far smaller.
const maxMessage = 4 << 20

// Channel is one end of the socketpair.
type Channel struct{ f *os.File }

// NewPair returns the parent's end and the helper's, both close-on-exec
// (the parent hands the helper's end over as SyncFd, which os/exec dups).
func NewPair() (parent *Channel, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return &Channel{os.NewFile(uintptr(fds[0]), "sync-parent")}, os.NewFile(uintptr(fds[1]), "sync-child"), nil
}

// HelperChannel is the helper's end, inherited as SyncFd; it is made
// close-on-exec, so the execve of the container's program closes it.
func HelperChannel() *Channel {
	unix.CloseOnExec(SyncFd)
	return &Channel{os.NewFile(SyncFd, "sync")}
}

// Close closes this end.
func (c *Channel) Close() error { return c.f.Close() }

// Send writes one message with fds attached.
func (c *Channel) Send(m Message, fds ...int) error {
	b, err := json.Marshal(wrap(m))
	if err != nil {
		return err
	}
	if len(b) > maxMessage {
		return fmt.Errorf("%s message too large (%d bytes)", m.kind(), len(b))
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(int(c.f.Fd()), b, oob, nil, 0)
}

// Recv reads one message and the fds it carries (close-on-exec); io.EOF
// means the other end is closed (after the helper's execve, or its exit).
func (c *Channel) Recv() (Message, []int, error) {
	b, fds, err := c.read()
	if err != nil {
		return nil, nil, err
	}
	var e envelope
	err = json.Unmarshal(b, &e)
	var m Message
	if err == nil {
		m, err = e.unwrap()
	}
	if err != nil {
		closeFds(fds)
		return nil, nil, fmt.Errorf("bad sync message: %w", err)
	}
	return m, fds, nil
}

// read returns one record, sized to it (a peek with MSG_TRUNC reports a
// seqpacket's full length, and installs no descriptors).
func (c *Channel) read() ([]byte, []int, error) {
	fd := int(c.f.Fd())
	var one [1]byte
	size, err := retry(func() (int, error) {
		n, _, _, _, err := unix.Recvmsg(fd, one[:], nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		return n, err
	})
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, max(1, min(size, maxMessage)))
	oob := make([]byte, unix.CmsgSpace(4*MaxFds))
	var oobn int
	n, err := retry(func() (int, error) {
		n, on, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		oobn = on
		return n, err
	})
	if err != nil {
		return nil, nil, err
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		return nil, nil, err
	}
	if n == 0 {
		closeFds(fds)
		return nil, nil, io.EOF
	}
	return buf[:n], fds, nil
}

func retry(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, c := range cmsgs {
		if r, err := unix.ParseUnixRights(&c); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds, nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Expect reads the next message, which must be a T. An Error message is
// returned as the *Error, EOF as io.EOF; any other message is a protocol
// error, and the fds that came with it are closed.
func Expect[T Message](c *Channel) (T, []int, error) {
	var zero T
	m, fds, err := c.Recv()
	if err != nil {
		return zero, nil, err
	}
	if t, ok := m.(T); ok {
		return t, fds, nil
	}
	closeFds(fds)
	if e, ok := m.(*Error); ok {
		return zero, nil, e
	}
	return zero, nil, fmt.Errorf("unexpected %q message, want %q", m.kind(), zero.kind())
}

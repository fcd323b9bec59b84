package container

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// setupTerminal allocates a pty from the container's own /dev/ptmx,
// makes the slave the controlling terminal and fds 0-2, and returns the
// master fd to hand to the parent.
func setupTerminal(p *preparedProcess) (int, error) {
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/ptmx in the container: %w", err)
	}
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(master)
		return -1, fmt.Errorf("unlock pty: %w", err)
	}
	// TIOCGPTPEER opens the slave through the master, without a path
	// lookup that the container's /dev/pts could redirect.
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	slave := int(r)
	if errno != 0 {
		err := error(errno)
		n, err2 := unix.IoctlGetInt(master, unix.TIOCGPTN)
		if err2 != nil {
			unix.Close(master)
			return -1, fmt.Errorf("get pty peer: %v / %v", err, err2)
		}
		slave, err = unix.Open("/dev/pts/"+strconv.Itoa(n), unix.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			unix.Close(master)
			return -1, fmt.Errorf("open pty slave: %w", err)
		}
	}
	if sz := p.spec.ConsoleSize; sz != nil {
		unix.IoctlSetWinsize(slave, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(sz.Height), Col: uint16(sz.Width)})
	}
	if err := unix.Fchown(slave, p.uid, p.gid); err != nil {
		unix.Close(master)
		unix.Close(slave)
		return -1, fmt.Errorf("chown pty slave: %w", err)
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(slave, fd, 0); err != nil {
			unix.Close(master)
			return -1, fmt.Errorf("dup pty slave: %w", err)
		}
	}
	if slave > 2 {
		unix.Close(slave)
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		unix.Close(master)
		return -1, fmt.Errorf("set controlling terminal: %w", err)
	}
	return master, nil
}

package security

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A profile is compiled once, by the shim (shim/seccomp), into the classic
// BPF program the kernel runs; each helper then installs that program with
// seccomp(2), the way runc loads what libseccomp exports. libseccomp takes
// some 20 ms of CPU to generate the program for containerd's default
// profile, so a helper that generated its own would pay that on every
// start and exec; and the helper does not link libseccomp at all.

// MaxSeccompProgramSize is the size of the longest program the kernel
// takes: BPF_MAXINSNS struct sock_filter entries.
const MaxSeccompProgramSize = unix.BPF_MAXINSNS * unix.SizeofSockFilter

// SeccompProgram is a compiled seccomp profile, ready to load.
type SeccompProgram struct {
	// Filter is the program: struct sock_filter entries in native byte
	// order, as libseccomp generates them.
	Filter []byte `json:"filter"`
	// Flags are the SECCOMP_FILTER_FLAG_* bits to load it with.
	Flags uint `json:"flags,omitempty"`
}

// loadFlags are the flags a program may be loaded with: never TSYNC, which
// would filter the helper's other threads too.
const loadFlags = unix.SECCOMP_FILTER_FLAG_LOG | unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW |
	unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV

// Check refuses a program the kernel could not take as it is (empty, cut
// short, or too long), or flags a compiled profile never has.
func (p *SeccompProgram) Check() error {
	n := len(p.Filter) / unix.SizeofSockFilter
	if n == 0 || n > unix.BPF_MAXINSNS || len(p.Filter)%unix.SizeofSockFilter != 0 {
		return fmt.Errorf("seccomp: a program of %d bytes is not 1 to %d instructions", len(p.Filter), unix.BPF_MAXINSNS)
	}
	if p.Flags&^loadFlags != 0 {
		return fmt.Errorf("seccomp: filter flags %#x", p.Flags)
	}
	return nil
}

// Notifies reports whether loading the program returns a listener fd.
func (p *SeccompProgram) Notifies() bool {
	return p.Flags&unix.SECCOMP_FILTER_FLAG_NEW_LISTENER != 0
}

// Load installs the program on the calling thread, which then execs the
// container's process. Without no_new_privs it needs CAP_SYS_ADMIN, so
// then it runs before the capabilities are dropped. When the profile
// notifies, notify gets the listener fd, for the runtime to hand to
// listenerPath from the host's side (SendListenerFd): dialled from inside
// the container, the path would be the container's to answer.
func (p *SeccompProgram) Load(notify func(fd int) error) error {
	if p == nil {
		return nil
	}
	if err := p.Check(); err != nil {
		return err
	}
	insns := make([]unix.SockFilter, len(p.Filter)/unix.SizeofSockFilter)
	for i := range insns {
		b := p.Filter[i*unix.SizeofSockFilter:]
		insns[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:])}
	}
	fd, err := seccompSetModeFilter(insns, p.Flags)
	if err != nil {
		return fmt.Errorf("loading seccomp filter: %w", err)
	}
	if !p.Notifies() {
		return nil
	}
	defer unix.Close(fd)
	if notify == nil {
		return fmt.Errorf("seccomp: the profile notifies, and nothing takes its listener")
	}
	return notify(fd)
}

// seccompSetModeFilter is seccomp(SECCOMP_SET_MODE_FILTER, flags, prog):
// the listener fd when flags ask for one.
func seccompSetModeFilter(insns []unix.SockFilter, flags uint) (int, error) {
	prog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(flags), uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

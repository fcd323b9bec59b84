// Package security holds what locks a container process down before it
// execs: capabilities, no_new_privs, seccomp, sysctls and LSM labels. The
// calls that change the calling thread's credentials (capabilities,
// no_new_privs, seccomp) must run on the OS thread that then calls execve,
// with runtime.LockOSThread held: Linux keeps them per thread.
package security

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Capabilities is the parsed form of an OCI process's five capability sets.
type Capabilities struct {
	bounding, effective, permitted, inheritable, ambient []capability.Cap
}

var capsByName = func() map[string]capability.Cap {
	m := map[string]capability.Cap{}
	for _, c := range capability.ListKnown() {
		m["CAP_"+strings.ToUpper(c.String())] = c
	}
	return m
}()

// ParseCapabilities checks every name. A name no kernel knows is an error;
// one newer than this kernel (above its last capability) is left out with a
// log line, as it cannot be granted here anyway.
func ParseCapabilities(c *specs.LinuxCapabilities) (*Capabilities, error) {
	out := &Capabilities{}
	if c == nil {
		return out, nil
	}
	last, err := capability.LastCap()
	if err != nil {
		return nil, err
	}
	for _, set := range []struct {
		name  string
		names []string
		dst   *[]capability.Cap
	}{
		{"bounding", c.Bounding, &out.bounding},
		{"effective", c.Effective, &out.effective},
		{"permitted", c.Permitted, &out.permitted},
		{"inheritable", c.Inheritable, &out.inheritable},
		{"ambient", c.Ambient, &out.ambient},
	} {
		for _, n := range set.names {
			cp, ok := capsByName[strings.ToUpper(n)]
			if !ok {
				return nil, fmt.Errorf("process.capabilities.%s: unknown capability %q: %w", set.name, n, errdefs.ErrInvalidArgument)
			}
			if cp > last {
				log.L.WithField("capability", n).Warn("capability is newer than this kernel; leaving it out")
				continue
			}
			*set.dst = append(*set.dst, cp)
		}
	}
	return out, nil
}

// DropBounding limits the bounding set. It needs CAP_SETPCAP, so it runs
// before the user switch drops capabilities.
func (c *Capabilities) DropBounding() error {
	caps, err := capability.NewPid2(0)
	if err != nil {
		return err
	}
	caps.Clear(capability.BOUNDING)
	caps.Set(capability.BOUNDING, c.bounding...)
	return caps.Apply(capability.BOUNDING)
}

// Apply sets the effective, permitted, inheritable and ambient sets of the
// calling thread; they carry over execve as the spec asks.
func (c *Capabilities) Apply() error {
	caps, err := capability.NewPid2(0)
	if err != nil {
		return err
	}
	caps.Clear(capability.CAPS | capability.AMBIENT)
	caps.Set(capability.EFFECTIVE, c.effective...)
	caps.Set(capability.PERMITTED, c.permitted...)
	caps.Set(capability.INHERITABLE, c.inheritable...)
	caps.Set(capability.AMBIENT, c.ambient...)
	if err := caps.Apply(capability.CAPS); err != nil {
		return fmt.Errorf("setting capabilities: %w", err)
	}
	// Ambient capabilities must be permitted and inheritable; a spec that
	// asks otherwise gets an error from the kernel, reported as such.
	if err := caps.Apply(capability.AMBIENT); err != nil {
		return fmt.Errorf("setting ambient capabilities: %w", err)
	}
	return nil
}

// KeepCapsAcrossSetuid makes setuid away from root keep the permitted set,
// so Apply can still grant what the spec asks for a non-root user.
func KeepCapsAcrossSetuid(keep bool) error {
	v := 0
	if keep {
		v = 1
	}
	return unix.Prctl(unix.PR_SET_KEEPCAPS, uintptr(v), 0, 0, 0)
}

// SetThreadIDs makes gid and uid the calling thread's real, effective and
// saved group and user ids, the group first while it still may. Like
// every call here it changes only this thread, which execs next: execve
// ends the others, and gives the process the ids of the thread that
// called it. syscall.Setresuid would change every thread, which in a cgo
// binary is the libc's broadcast: a signal to each runtime thread and a
// wait for all of them, 0.3 to 1.5 ms per call under musl on a virtual
// machine, for threads the exec is about to end.
//
// Until then the other threads are still root, in the memory this thread
// shares with them, so the process must stay non-dumpable: a process of
// the container's user could otherwise reach it through ptrace or
// /proc/<pid>/mem. The kernel resets dumpable to fs.suid_dumpable when
// the effective ids change, so it is set again here.
func SetThreadIDs(uid, gid int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
		return fmt.Errorf("setgid %d: %w", gid, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return fmt.Errorf("setuid %d: %w", uid, e)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("set non-dumpable after setuid: %w", err)
	}
	return nil
}

// SetNoNewPrivileges sets no_new_privs: execve can no longer grant
// privileges (setuid bits, file capabilities).
func SetNoNewPrivileges() error {
	return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
}

// KnownCapabilities lists every capability name this build knows, in
// number order (for the runtime's features report).
func KnownCapabilities() []string {
	var out []string
	for _, c := range capability.ListKnown() {
		out = append(out, "CAP_"+strings.ToUpper(c.String()))
	}
	return out
}

package container

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// How tupper joins existing namespaces, and why without a C constructor.
//
// setns(2) acts on the calling thread. The Go runtime is multithreaded, so
// the question is which joins one thread can do and how the result reaches
// the container's process:
//
//   - net, ipc, uts, cgroup: per-thread, no restriction on threads. The
//     parent locks a goroutine to its OS thread, setns's, and forks the
//     helper from that thread; the child inherits the thread's namespaces.
//   - pid: setns only changes pid_for_children of the thread, which is
//     exactly what we need: the helper forked from that thread is born in
//     the target pid namespace, and the pid returned by fork is its pid as
//     seen by us. No double fork, and the pid we wait on is the real one.
//   - mnt: the kernel refuses CLONE_NEWNS when the caller's fs_struct is
//     shared (mntns_install checks fs->users == 1), and every Go thread
//     shares it (threads are cloned with CLONE_FS). The helper therefore
//     calls unshare(CLONE_FS) on its main thread, which the helper keeps
//     locked from package init onwards, and then setns(mnt) works on that
//     thread. The helper never returns the thread to the scheduler: it
//     execve's from it, and execve keeps the calling thread's namespaces
//     and root/cwd while it kills the other threads. The join cannot be
//     done in the parent because the parent then has to execve the helper
//     binary by a path that does not exist inside the container.
//   - user, time: the kernel requires a single-threaded caller
//     (userns_install / timens_install), which no Go program is. These
//     need code that runs before the Go runtime starts (a cgo constructor
//     gated by an environment variable, as runc's nsexec does). tupper does
//     not support user or time namespaces yet, so validate() rejects them
//     with a clear error rather than pretending; the constructor belongs in
//     its own small package when user namespaces land.
//
// This keeps the shim free of cgo (static binary, no C toolchain) while
// every join it claims is done by the kernel's own rules; tests cover each.

type nsJoin struct {
	typ specs.LinuxNamespaceType
	f   *os.File
}

var nsTypeIoctl = map[specs.LinuxNamespaceType]int{
	specs.PIDNamespace:     unix.CLONE_NEWPID,
	specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.MountNamespace:   unix.CLONE_NEWNS,
	specs.IPCNamespace:     unix.CLONE_NEWIPC,
	specs.UTSNamespace:     unix.CLONE_NEWUTS,
	specs.UserNamespace:    unix.CLONE_NEWUSER,
	specs.CgroupNamespace:  unix.CLONE_NEWCGROUP,
	specs.TimeNamespace:    unix.CLONE_NEWTIME,
}

// openNs opens a namespace file and checks that it is a namespace of the
// expected type (NS_GET_NSTYPE), so a wrong path fails Create early.
func openNs(path string, typ specs.LinuxNamespaceType) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s namespace: %w", typ, err)
	}
	got, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s is not a namespace file: %w", path, err)
	}
	if got != nsTypeIoctl[typ] {
		f.Close()
		return nil, fmt.Errorf("%s is not a %s namespace", path, typ)
	}
	return f, nil
}

// startJoined starts cmd from a thread that has joined the given
// namespaces (all but mnt, see above).
func startJoined(cmd *exec.Cmd, starter Starter, joins []nsJoin) (func() (int, error), error) {
	if len(joins) == 0 {
		return starter(cmd)
	}
	type result struct {
		wait func() (int, error)
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: after setns this thread no longer matches the
		// rest of the process, so it must exit with this goroutine.
		runtime.LockOSThread()
		for _, j := range joins {
			if err := unix.Setns(int(j.f.Fd()), nsTypeIoctl[j.typ]); err != nil {
				ch <- result{err: fmt.Errorf("join %s namespace %s: %w", j.typ, j.f.Name(), err)}
				return
			}
		}
		w, err := starter(cmd)
		ch <- result{w, err}
	}()
	r := <-ch
	return r.wait, r.err
}

// joinMountNs is run by the helper on its locked main thread.
func joinMountNs(fd int) error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare fs: %w", err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("join mount namespace: %w", err)
	}
	return nil
}

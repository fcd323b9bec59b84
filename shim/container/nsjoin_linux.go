package container

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// How tupper joins existing namespaces.
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
//     (userns_install / timens_install), which no Go program is. The
//     helper joins them in a C constructor that runs before the Go
//     runtime (package shim/nsenter, which every helper binary imports),
//     told what to join by the _TUPPER_NSENTER environment variable: user
//     first, then mnt (whose owner is usually that user namespace) and
//     time. The same constructor unshares the new namespaces a container
//     joining a user namespace by path wants, so the joined namespace owns
//     them. The helper's Go code checks that every join happened
//     (helperJoins), so a binary without the constructor fails clearly.
//
// A new user namespace needs no constructor: the helper is cloned with
// CLONE_NEWUSER together with the other new namespaces (which the new user
// namespace then owns), and os/exec writes uid_map/gid_map from the parent
// before the child goes on and becomes root of the namespace (Credential
// 0:0) ahead of its execve, which therefore keeps full capabilities there.

type nsJoin struct {
	typ specs.LinuxNamespaceType
	f   *os.File
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
	if got != int(nsFlags[typ]) {
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
			if err := unix.Setns(int(j.f.Fd()), int(nsFlags[j.typ])); err != nil {
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

// Environment of the helper for shim/nsenter's constructor.
const (
	nsenterEnv        = "_TUPPER_NSENTER"
	nsenterUnshareEnv = "_TUPPER_NSENTER_UNSHARE"
	nsenterForkEnv    = "_TUPPER_NSENTER_FORK"
)

// helperJoinOrder is the order in which the helper joins namespaces:
// user first, since it grants the capabilities over what it owns.
var helperJoinOrder = map[specs.LinuxNamespaceType]int{
	specs.UserNamespace: 0, specs.MountNamespace: 1, specs.TimeNamespace: 2,
}

// joinedByHelper reports whether the helper (not the parent's thread)
// joins namespaces of type typ.
func joinedByHelper(typ specs.LinuxNamespaceType) bool {
	_, ok := helperJoinOrder[typ]
	return ok
}

// needsConstructor reports whether joins, done by the helper, include one
// only shim/nsenter's constructor can do.
func needsConstructor(joins []nsJoin) bool {
	for _, j := range joins {
		if j.typ == specs.UserNamespace || j.typ == specs.TimeNamespace {
			return true
		}
	}
	return false
}

// sameNamespace reports whether the namespace file open as fd is the
// calling thread's namespace of that type.
func sameNamespace(fd int, typ specs.LinuxNamespaceType) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/thread-self/ns/"+procNsName[typ], &b); err != nil {
		return false, err
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// helperJoins runs first in the helper: it checks the joins shim/nsenter's
// constructor did, and joins the mount namespace itself when no
// constructor was needed.
func helperJoins(fds map[specs.LinuxNamespaceType]int) error {
	for _, typ := range []specs.LinuxNamespaceType{specs.UserNamespace, specs.MountNamespace, specs.TimeNamespace} {
		fd, ok := fds[typ]
		if !ok {
			continue
		}
		in, err := sameNamespace(fd, typ)
		if err != nil {
			return fmt.Errorf("check %s namespace: %w", typ, err)
		}
		switch {
		case in:
		case typ == specs.MountNamespace:
			if err := joinMountNs(fd); err != nil {
				return err
			}
		default:
			return fmt.Errorf("the %s namespace was not joined: the init helper binary must import github.com/tupper/tupper/shim/nsenter", typ)
		}
	}
	return nil
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

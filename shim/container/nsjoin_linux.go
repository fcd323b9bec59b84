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
// setns(2) acts on the calling thread, and the kernel refuses to move a
// multithreaded process into a user, mount or time namespace; a Go program
// has several threads before main runs. So the helper's C constructor
// (shim/nsenter), single-threaded before the Go runtime starts, does every
// join, from fds the parent opened and passed (their types checked with
// NS_GET_NSTYPE), in joinOrder: every other namespace first, then the user
// namespace, since after that join the helper only has capabilities over
// what that user namespace owns (a pod's network namespace, made by the
// host, is not). It is not dumpable from its first instruction, and a
// joined pid namespace (exec, a pod's shared one) only takes the helper's
// children, so the constructor forks it there (see forkMode and
// protocol.Forked) after every other join: the helper appears in the
// container's pid namespace already in the container's mount namespace,
// where nothing of the host is reachable through /proc/<pid>/root, and not
// ptraceable. The helper's Go code checks every join (helperJoins).
//
// One exception: beside a new user namespace (clone flags), a namespace
// owned by the host's user namespace could not be joined from inside it,
// so the parent joins those on a goroutine locked to its thread and
// clones the helper from there (startJoined); the thread then exits with
// the goroutine. That is CRI's pod sandbox in a user namespace, whose
// network namespace CNI made; nothing else runs in its namespaces yet.
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

// joinOrder is the order in which the constructor joins namespaces: the
// user namespace last (see above); mnt late, since it changes the root.
var joinOrder = map[specs.LinuxNamespaceType]int{
	specs.CgroupNamespace: 0, specs.IPCNamespace: 1, specs.UTSNamespace: 2, specs.NetworkNamespace: 3,
	specs.PIDNamespace: 4, specs.TimeNamespace: 5, specs.MountNamespace: 6, specs.UserNamespace: 7,
}

// perThread are the namespace types a thread of a multithreaded process
// may join (the parent's, beside a new user namespace).
var perThread = map[specs.LinuxNamespaceType]bool{
	specs.CgroupNamespace: true, specs.IPCNamespace: true, specs.UTSNamespace: true,
	specs.NetworkNamespace: true, specs.PIDNamespace: true,
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

// helperJoins runs first in the helper's Go code: it checks that the
// constructor joined every namespace it was given.
func helperJoins(fds map[specs.LinuxNamespaceType]int) error {
	for typ, fd := range fds {
		in, err := sameNamespace(fd, typ)
		if err != nil {
			return fmt.Errorf("check %s namespace: %w", typ, err)
		}
		if !in {
			return fmt.Errorf("the %s namespace was not joined: the helper binary must import github.com/tupper/tupper/shim/nsenter", typ)
		}
	}
	return nil
}

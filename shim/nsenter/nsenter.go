//go:build linux && cgo

// Package nsenter joins namespaces that a multithreaded process cannot
// join: user and time. Import it for its side effect, in every binary that
// is re-executed as shim/container's init helper:
//
//	import _ "github.com/tupper/tupper/shim/nsenter"
//
// Why C: setns(2) into a user namespace (and into a time namespace) is
// refused with EINVAL when the caller has more than one thread, and a Go
// program has several before main runs. A C constructor runs before the
// Go runtime starts any thread, so that is where the join happens; the Go
// code of the helper then already runs inside the namespaces.
//
// The constructor does nothing unless _TUPPER_NSENTER (or
// _TUPPER_CGROUP_FDS, below) is set, so the shim is otherwise an ordinary
// (cgo-linked) Go binary. shim/container sets it
// only on the init helper, and only when the helper must join a user or
// time namespace. The format is
//
//	_TUPPER_NSENTER=user:4,mnt:5,time:6
//
// namespace files already open as those fds (their types were checked by
// the parent with NS_GET_NSTYPE), joined in the given order: the parent
// puts user first, so that the mount (and time) namespaces owned by it can
// be joined with the capabilities the join grants. After the user join the
// helper becomes root of that namespace (setresgid/setresuid 0), as it
// must be to build the container. _TUPPER_NSENTER_UNSHARE=<clone flags>
// then creates new namespaces (mnt, uts, ipc, net), which the joined user
// namespace owns.
//
// With _TUPPER_NSENTER_FORK=1 (a new pid namespace inside a joined user
// namespace: unshare(CLONE_NEWPID) only moves the caller's children) the
// constructor forks once more, with CLONE_PARENT, sends the child's pid as
// {"type":"pid","pid":N} on fd 3 and exits; the child, PID 1 of the new
// namespace and a direct child of the parent, goes on as the helper. (A
// pid namespace cannot be handed to the parent to fork into instead:
// /proc/<pid>/ns/pid_for_children cannot be opened before it has a PID 1.)
//
// Before any of that, with _TUPPER_CGROUP_FDS=7,8 (open v1 cgroup "tasks"
// files), it writes "0" to each: the still single-threaded helper moves
// itself into the container's cgroup, which is much cheaper than being
// moved (see shim/container's CgroupJoin).
//
// On failure the constructor sends shim/container's error message on the
// helper's sync socket (fd 3) and exits; the parent reports it.
// The fds stay open: the Go side checks that each join happened.
package nsenter

// #cgo CFLAGS: -Wall -Wextra -O2
// extern void tupper_nsenter(void);
// void __attribute__((constructor)) tupper_nsenter_init(void) { tupper_nsenter(); }
import "C"

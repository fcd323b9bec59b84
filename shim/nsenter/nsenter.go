//go:build linux && cgo

// Package nsenter is the C that runs in tupper's binaries before the Go
// runtime starts. Import it for its side effect in every binary that is
// re-executed as a shim/container helper, or that containerd runs as the
// shim:
//
//	import _ "github.com/tupper/tupper/shim/nsenter"
//
// It holds two units, each a no-op unless its own conditions hold:
//
//   - helper.c, in a helper (protocol.EnvInit set): the steps that need a
//     single-threaded process, which a Go program never is once its
//     runtime runs. In order:
//     1. enter the container's v1 cgroup by writing "0" to each "tasks"
//     fd in EnvCgroupFds (moving oneself skips the global lock that
//     moving another process takes; see shim/cgroups' Placement);
//     2. join the namespaces in EnvNsenter, "user:4,mnt:5,time:6", in
//     that order: setns into a user or time namespace is refused to a
//     multithreaded caller. After a user namespace the helper becomes
//     its root (setresgid/setresuid 0, groups dropped where allowed),
//     as it must be to build the container;
//     3. unshare the namespaces in EnvUnshare (clone flags), which a
//     joined user namespace then owns;
//     4. with EnvFork, fork once more into the pid namespace joined or
//     made in steps 2 and 3 (they only move children), send the child's
//     pid as the protocol's Forked message and exit: the child goes on as
//     the helper, the parent's child (protocol.ForkToSubreaper: libc's
//     fork, and the parent, a child subreaper, inherits it; else
//     CLONE_PARENT). (The parent cannot fork into that namespace itself:
//     pid_for_children cannot be opened before the namespace has a PID 1.)
//     On failure it sends the protocol's Error message on protocol.SyncFd
//     and exits; the Go side of the helper checks every join again.
//   - fastdelete.c: the `shim delete` fast path (fastdelete.go).
//
// protocol.h, which both include, is generated from the Go names
// (header.go); TestHeaderIsCurrent fails when it is stale.
package nsenter

// #cgo CFLAGS: -Wall -Wextra -O2
// extern void tupper_fast_delete(void);
// extern void tupper_nsenter(void);
// void __attribute__((constructor)) tupper_constructor(void) {
//	tupper_fast_delete();
//	tupper_nsenter();
// }
import "C"

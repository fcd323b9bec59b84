package protocol

import (
	"encoding/json"
	"strconv"
	"strings"
)

// Names the parent and shim/nsenter's C constructor share. The C side gets
// them from a header generated from this file (see shim/nsenter).
const (
	// SyncFd is the helper's end of the socketpair.
	SyncFd = 3
	// EnvInit marks a process as a helper (shim/container's MaybeInit).
	EnvInit = "_TUPPER_INIT"
	// EnvFds is how many fds the parent passed from fd 3 on; the
	// constructor closes every fd above them.
	EnvFds = "_TUPPER_FDS"
	// EnvCgroupFds lists open v1 cgroup "tasks" files the constructor
	// writes "0" to, comma-separated.
	EnvCgroupFds = "_TUPPER_CGROUP_FDS"
	// EnvNsenter lists the namespaces the constructor joins, in order,
	// as type:fd pairs: "user:4,mnt:5".
	EnvNsenter = "_TUPPER_NSENTER"
	// EnvUnshare holds the clone flags of the namespaces the constructor
	// makes after its joins, in decimal.
	EnvUnshare = "_TUPPER_NSENTER_UNSHARE"
	// EnvFork, when set, makes the constructor fork the helper into the
	// pid namespace it joined or unshared and send Forked: ForkToSubreaper
	// or ForkCloneParent.
	EnvFork = "_TUPPER_NSENTER_FORK"
	// ForkToSubreaper forks with the libc's fork(), whose child's libc
	// holds the child's own thread id (musl reads it in gettid(), raise()
	// and abort() and owns its thread-list lock by it); the parent, a
	// child subreaper, inherits the helper when the intermediate exits.
	ForkToSubreaper = "subreaper"
	// ForkCloneParent forks with a raw clone(CLONE_PARENT), for a parent
	// that is no subreaper (tupper-run, tests that also run runc): the
	// helper is the parent's child at once, but its libc keeps the
	// intermediate's thread id.
	ForkCloneParent = "clone-parent"
)

// ErrorWire returns the wire form of an Error message as the text before
// and after its message, for C to print the message between them (it must
// need no JSON escaping).
func ErrorWire() (begin, end string) {
	const mark = "MESSAGE"
	b, _ := json.Marshal(wrap(&Error{Msg: mark}))
	begin, end, _ = strings.Cut(string(b), mark)
	return begin, end
}

// ForkedWire returns the wire form of a Forked message as a printf format
// with one %ld, the pid.
func ForkedWire() string {
	const mark = 987654321
	b, _ := json.Marshal(wrap(&Forked{Pid: mark}))
	return strings.Replace(string(b), strconv.Itoa(mark), "%ld", 1)
}

// Package protocol is the exchange between shim/container (the parent: the
// shim, tupper-run, a test) and a helper, the parent's own binary
// re-executed to become one process of a container: the container's init,
// or a process exec'd into it.
//
// The helper starts in C, in shim/nsenter's constructor, before the Go
// runtime exists, and goes on in Go (shim/container's helper code). The two
// sides talk over a SOCK_SEQPACKET socketpair, the helper's end at fd
// SyncFd: each record is one JSON message, and a message may carry file
// descriptors (SCM_RIGHTS). The helper's end is close-on-exec, so a
// successful execve shows up on the parent's end as EOF.
//
//	parent                                       helper
//	------                                       ------
//	start the helper: clone flags, fds, env ---> [C] enter the cgroup (EnvCgroupFds)
//	                                             [C] join namespaces (EnvNsenter),
//	                                                 unshare (EnvUnshare)
//	                                             [C] fork into a new pid namespace
//	                           <--- Forked{pid}      (EnvFork only; then exit)
//	place it in the cgroup, set limits
//	Config (+ mount fds)        -------------->  [Go] check the joins
//	                                             init: build the mounts
//	                           <--- HooksRequest     (init with OCI hooks only)
//	run prestart, createRuntime
//	HooksDone{state}            -------------->      createContainer hooks
//	                                             init: pivot_root, masks, sysctls
//	                                             both: resolve user and executable
//	                           <--- Ready (+ pty master)
//	Start                       -------------->  startContainer hooks (init),
//	                                             credentials, seccomp
//	                           <--- Seccomp (+ listener fd; notify profiles only)
//	send it to listenerPath
//	SeccompOK                   -------------->  execve
//	                           <--- EOF
//
// Until then the helper may answer Error instead and exit; the parent
// then kills and reaps it. From where the helper loads a seccomp filter
// that does not notify (else from its execve), a failure is the process'
// own, as after runc's start: the helper writes it to its stderr and exits
// with 255, as runc's init does, and the parent sees EOF. (After the
// filter, a call of the helper's own to the parent could be refused.)
//
// The parent's side is a small state machine (shim/container's
// handshake); init and exec are two paths on the helper's side. The C constructor speaks a subset of this protocol (Error and
// Forked, and the environment names in names.go); shim/nsenter's header is
// generated from this package, so the two cannot drift.
package protocol

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/shim/security"
)

// Kind names a message on the wire.
type Kind string

const (
	KindConfig    Kind = "config"   // parent -> helper
	KindHooks     Kind = "hooks"    // helper -> parent
	KindHooksDone Kind = "continue" // parent -> helper
	KindReady     Kind = "ready"    // helper -> parent
	KindStart     Kind = "start"    // parent -> helper
	KindError     Kind = "error"    // helper -> parent, also from C
	KindForked    Kind = "pid"      // helper (C) -> parent
	KindSeccomp   Kind = "seccomp"  // helper -> parent
	KindSeccompOK Kind = "seccomp-ok"
)

// Message is one of the types below.
type Message interface{ kind() Kind }

// Config tells the helper what to build. It is the first message the
// helper reads, sent once the parent has placed it in its cgroup.
type Config struct {
	Process *Process `json:"process"`
	// Init is set for a container's init; an exec has none.
	Init *Init `json:"init,omitempty"`
	// NsFds are the namespaces the helper joins (or its constructor
	// joined), by OCI type, as fd numbers in the helper.
	NsFds map[specs.LinuxNamespaceType]int `json:"nsFds,omitempty"`
	// CgroupFds are the cgroup "tasks" files the constructor moved the
	// helper in through, to check and close.
	CgroupFds []int `json:"cgroupFds,omitempty"`
	// NewTimeNs asks the helper to unshare a time namespace (with
	// TimeOffsets) that its program enters at execve.
	NewTimeNs   bool                             `json:"newTimeNs,omitempty"`
	TimeOffsets map[string]specs.LinuxTimeOffset `json:"timeOffsets,omitempty"`
}

// Process is what every process of a container gets: the program, and the
// container's seccomp program (compiled by the parent), personality and
// LSM labels.
type Process struct {
	Spec *specs.Process `json:"spec"`
	// ID names the container's session keyring.
	ID          string                   `json:"id"`
	Seccomp     *security.SeccompProgram `json:"seccomp,omitempty"`
	Personality *specs.LinuxPersonality  `json:"personality,omitempty"`
	LSM         security.LSM             `json:"lsm"`
}

// Init is what only a container's init builds.
type Init struct {
	Spec *specs.Spec `json:"spec"`
	// Rootfs is the absolute host path of the root filesystem.
	Rootfs string `json:"rootfs"`
	// NoPivotRoot selects MS_MOVE + chroot instead of pivot_root.
	NoPivotRoot bool `json:"noPivotRoot,omitempty"`
	// NewCgroupNs asks the helper to unshare a cgroup namespace first;
	// not a clone flag, so that the namespace's root is the container's
	// cgroup, where the parent placed the helper.
	NewCgroupNs bool `json:"newCgroupNs,omitempty"`
	// NewIPCNs asks the helper to unshare an ipc namespace as root of its
	// new user namespace, so that /dev/mqueue belongs to that root.
	NewIPCNs bool `json:"newIPCNs,omitempty"`
	// MountFds maps the index of a bind mount in Spec.Mounts to the index
	// of its source among the fds sent with the Config.
	MountFds map[int]int `json:"mountFds,omitempty"`
	// TreeFds does the same for detached (idmapped) mounts, which the
	// helper attaches with move_mount.
	TreeFds map[int]int `json:"treeFds,omitempty"`
}

// HooksRequest asks the parent to run the prestart and createRuntime hooks:
// the container's namespaces and mounts exist, it has not pivoted yet.
type HooksRequest struct{}

// HooksDone answers HooksRequest with the state the helper hands to the
// createContainer and startContainer hooks.
type HooksDone struct {
	State *specs.State `json:"state"`
}

// Ready says the helper is built and waits for Start. With a terminal, the
// pty master travels with it.
type Ready struct{}

// Start tells the helper to execve.
type Start struct{}

// Error ends the exchange: the helper failed and exits.
type Error struct {
	Msg string `json:"error"`
	// Invalid marks a refusal of the spec rather than a failure.
	Invalid bool `json:"invalid,omitempty"`
}

func (e *Error) Error() string { return e.Msg }

// Seccomp carries the listener fd of a seccomp profile that notifies: the
// parent hands it to the profile's listenerPath from the host's side.
type Seccomp struct{}

// SeccompOK says the listener fd reached its agent.
type SeccompOK struct{}

// Forked is the pid of the helper that the constructor forked into a new
// pid namespace (EnvFork), in the parent's pid namespace.
type Forked struct {
	Pid int `json:"pid"`
}

func (*Config) kind() Kind       { return KindConfig }
func (*HooksRequest) kind() Kind { return KindHooks }
func (*HooksDone) kind() Kind    { return KindHooksDone }
func (*Ready) kind() Kind        { return KindReady }
func (*Start) kind() Kind        { return KindStart }
func (*Error) kind() Kind        { return KindError }
func (*Forked) kind() Kind       { return KindForked }
func (*Seccomp) kind() Kind      { return KindSeccomp }
func (*SeccompOK) kind() Kind    { return KindSeccompOK }

// envelope is the wire form: the kind, and the fields of exactly one
// message. Error's and Forked's fields sit at the top level, where the C
// constructor writes them.
type envelope struct {
	Type    Kind         `json:"type"`
	Error   string       `json:"error,omitempty"`
	Invalid bool         `json:"invalid,omitempty"`
	Pid     int          `json:"pid,omitempty"`
	Config  *Config      `json:"config,omitempty"`
	State   *specs.State `json:"state,omitempty"`
}

func wrap(m Message) envelope {
	e := envelope{Type: m.kind()}
	switch m := m.(type) {
	case *Config:
		e.Config = m
	case *HooksDone:
		e.State = m.State
	case *Error:
		e.Error, e.Invalid = m.Msg, m.Invalid
	case *Forked:
		e.Pid = m.Pid
	}
	return e
}

func (e envelope) unwrap() (Message, error) {
	switch e.Type {
	case KindConfig:
		if e.Config == nil || e.Config.Process == nil || e.Config.Process.Spec == nil {
			return nil, fmt.Errorf("config message without a process")
		}
		return e.Config, nil
	case KindHooks:
		return &HooksRequest{}, nil
	case KindHooksDone:
		if e.State == nil {
			return nil, fmt.Errorf("hooks-done message without a state")
		}
		return &HooksDone{State: e.State}, nil
	case KindReady:
		return &Ready{}, nil
	case KindStart:
		return &Start{}, nil
	case KindError:
		return &Error{Msg: e.Error, Invalid: e.Invalid}, nil
	case KindSeccomp:
		return &Seccomp{}, nil
	case KindSeccompOK:
		return &SeccompOK{}, nil
	case KindForked:
		if e.Pid <= 0 {
			return nil, fmt.Errorf("forked message with pid %d", e.Pid)
		}
		return &Forked{Pid: e.Pid}, nil
	}
	return nil, fmt.Errorf("unknown message type %q", e.Type)
}

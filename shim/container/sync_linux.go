package container

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/shim/security"
	"golang.org/x/sys/unix"
)

// The parent and the init helper talk over a SOCK_SEQPACKET socketpair:
// every write is one JSON message, and a message may carry file
// descriptors (the pty master) as SCM_RIGHTS. The helper's end is
// close-on-exec, so a successful execve shows up as EOF on the parent's
// end.

const (
	msgConfig = "config" // parent -> helper: what to build
	msgReady  = "ready"  // helper -> parent: created, waiting for start
	msgStart  = "start"  // parent -> helper: exec now
	msgError  = "error"  // helper -> parent: failed, the helper exits
	// msgHooks asks the parent to run the prestart and createRuntime
	// hooks; msgContinue answers with the container state the helper
	// hands to its own createContainer and startContainer hooks.
	msgHooks = "hooks"
	// msgPid comes from shim/nsenter's constructor (C): the pid of the
	// helper it forked into a new pid namespace.
	msgPid      = "pid"
	msgContinue = "continue"
)

type message struct {
	Type  string `json:"type"`
	Error string `json:"error,omitempty"`
	// Invalid marks an error as a spec error (ValidationError).
	Invalid bool         `json:"invalid,omitempty"`
	Config  *initConfig  `json:"config,omitempty"`
	State   *specs.State `json:"state,omitempty"`
	Pid     int          `json:"pid,omitempty"`
}

type initConfig struct {
	// Exec is true for a process joining a running container.
	Exec bool `json:"exec,omitempty"`
	// Spec is the whole spec for a new container.
	Spec *specs.Spec `json:"spec,omitempty"`
	// Process is what to run (spec.Process for a new container).
	Process *specs.Process `json:"process"`
	// Rootfs is the absolute host path of the root filesystem.
	Rootfs string `json:"rootfs,omitempty"`
	// NoPivotRoot selects MS_MOVE + chroot instead of pivot_root.
	NoPivotRoot bool `json:"noPivotRoot,omitempty"`
	// NewCgroupNs asks the helper to unshare a cgroup namespace before
	// it sets anything up. It is not a clone flag because the parent
	// moves the helper into the container's cgroup first (OnSpawn).
	NewCgroupNs bool `json:"newCgroupNs,omitempty"`
	// MountFds maps the index of a bind mount in Spec.Mounts to the index
	// of its source among the fds sent with the config message.
	MountFds map[int]int `json:"mountFds,omitempty"`
	// TreeFds does the same for detached (idmapped) mounts, which the
	// helper attaches with move_mount.
	TreeFds map[int]int `json:"treeFds,omitempty"`
	// NewIPCNs asks the helper to unshare an ipc namespace, on its main
	// thread, as root of its new user namespace.
	NewIPCNs bool `json:"newIPCNs,omitempty"`
	// NewTimeNs asks the helper to unshare a time namespace (with
	// TimeOffsets) that its program enters at execve.
	NewTimeNs   bool                             `json:"newTimeNs,omitempty"`
	TimeOffsets map[string]specs.LinuxTimeOffset `json:"timeOffsets,omitempty"`
	// NsFds are namespaces the helper joins itself, by OCI type, as fd
	// numbers in the helper.
	NsFds map[specs.LinuxNamespaceType]int `json:"nsFds,omitempty"`
	// CgroupFds are the cgroup "tasks" files the helper's constructor
	// moved it in through (CgroupJoin.TasksFiles), to check and close.
	CgroupFds []int `json:"cgroupFds,omitempty"`
	// ID and Bundle name the container, for the state a seccomp listener gets.
	ID     string `json:"id"`
	Bundle string `json:"bundle"`
	// Seccomp, Personality and LSM apply to every process of the container,
	// execs included.
	Seccomp     *specs.LinuxSeccomp     `json:"seccomp,omitempty"`
	Personality *specs.LinuxPersonality `json:"personality,omitempty"`
	LSM         security.LSM            `json:"lsm"`
}

const maxMessage = 4 << 20

// maxFds is the most fds one message carries (the kernel's SCM_MAX_FD).
const maxFds = 253

func socketPair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "sync-parent"), os.NewFile(uintptr(fds[1]), "sync-child"), nil
}

func sendMsg(f *os.File, m *message, fds ...int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > maxMessage {
		return fmt.Errorf("sync message too large (%d bytes)", len(b))
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(int(f.Fd()), b, oob, nil, 0)
}

// recvMsg reads one message; io.EOF means the other end is closed.
func recvMsg(f *os.File) (*message, []int, error) {
	oob := make([]byte, unix.CmsgSpace(4*maxFds))
	for {
		// Size the buffer to the message (MSG_TRUNC reports a seqpacket's
		// full length) instead of holding maxMessage per exchange; the
		// peek passes no control buffer, so it installs no descriptors.
		var one [1]byte
		size, _, _, _, err := unix.Recvmsg(int(f.Fd()), one[:], nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		buf := make([]byte, max(1, min(size, maxMessage)))
		n, oobn, _, _, err := unix.Recvmsg(int(f.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		var fds []int
		if oobn > 0 {
			cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return nil, nil, err
			}
			for _, c := range cmsgs {
				r, err := unix.ParseUnixRights(&c)
				if err == nil {
					fds = append(fds, r...)
				}
			}
		}
		if n == 0 {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, nil, io.EOF
		}
		var m message
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			return nil, nil, fmt.Errorf("bad sync message: %w", err)
		}
		return &m, fds, nil
	}
}

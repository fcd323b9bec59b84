package container

import (
	"errors"
	"fmt"
	"os"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/shim/container/protocol"
	"github.com/tupper/tupper/shim/security"
	"golang.org/x/sys/unix"
)

// runInit is the helper of a new container's init (runc's standard init):
// it makes the namespaces clone could not, builds the container's root
// and system, then the process. srcFds came with the Config (mount
// sources, see protocol.Init). It returns only on failure.
func (h *helper) runInit(srcFds []int) error {
	init := h.cfg.Init
	trees, err := mountSources(init, srcFds)
	if err != nil {
		return err
	}
	if err := h.enter(); err != nil {
		return err
	}
	if err := unshareInit(init); err != nil {
		return err
	}
	if err := helperJoins(h.cfg.NsFds); err != nil {
		return err
	}
	if h.cfg.NewTimeNs {
		if err := unshareTime(h.cfg.TimeOffsets); err != nil {
			return err
		}
	}
	if newNetns(init.Spec) {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	var state *specs.State
	beforePivot := func() (err error) {
		state, err = h.runtimeHooks()
		return err
	}
	err = setupContainer(init.Spec, init.Rootfs, init.NoPivotRoot, trees, beforePivot)
	// The mount sources lead into the host: gone before the program is.
	closeAll(srcFds)
	if err != nil {
		return err
	}
	return h.finish(true, func() error { return startContainerHooks(init.Spec, state) })
}

// newNetns reports whether the container has a network namespace of its
// own, made for it.
func newNetns(spec *specs.Spec) bool {
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path == ""
		}
	}
	return false
}

// loopbackUp brings lo up in the helper's new network namespace, as runc
// does: whoever networks the container (tupper, CNI, nerdctl's hooks)
// adds the rest, and a container must reach its own services on
// 127.0.0.1 whatever it got.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr)
	}
	if err == nil {
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		err = unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	}
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// mountSources points the spec's bind mounts at the sources the parent
// opened (mount i from /proc/self/fd/<fds[MountFds[i]]>) and returns the
// detached idmapped mounts to attach, by mount index.
func mountSources(init *protocol.Init, fds []int) (map[int]int, error) {
	trees := map[int]int{}
	for i, k := range init.MountFds {
		if i < 0 || i >= len(init.Spec.Mounts) || k < 0 || k >= len(fds) {
			return nil, errors.New("helper: bad mount source fds")
		}
		init.Spec.Mounts[i].Source = fmt.Sprintf("/proc/self/fd/%d", fds[k])
	}
	for i, k := range init.TreeFds {
		if i < 0 || i >= len(init.Spec.Mounts) || k < 0 || k >= len(fds) {
			return nil, errors.New("helper: bad mount fds")
		}
		trees[i] = fds[k]
	}
	return trees, nil
}

// unshareInit makes the namespaces that must be made by the helper on this
// locked main thread, the one that mounts and execve's: ipc as root of a
// new user namespace, and cgroup once in the container's cgroup (which
// becomes the namespace's root).
func unshareInit(init *protocol.Init) error {
	if init.NewIPCNs {
		if err := unix.Unshare(unix.CLONE_NEWIPC); err != nil {
			return fmt.Errorf("unshare ipc namespace: %w", err)
		}
	}
	if init.NewCgroupNs {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("unshare cgroup namespace: %w", err)
		}
	}
	return nil
}

// runtimeHooks asks the parent to run the prestart and createRuntime hooks
// when the spec has any hooks before Start, then runs createContainer; it
// returns the state the parent sent (nil without hooks).
func (h *helper) runtimeHooks() (*specs.State, error) {
	hooks := h.cfg.Init.Spec.Hooks
	if hooks == nil || len(hooks.Prestart)+len(hooks.CreateRuntime)+len(hooks.CreateContainer)+len(hooks.StartContainer) == 0 { //nolint:staticcheck // Prestart is deprecated but still part of the spec
		return nil, nil
	}
	if err := h.ch.Send(&protocol.HooksRequest{}); err != nil {
		return nil, errParentGone
	}
	done, _, err := protocol.Expect[*protocol.HooksDone](h.ch)
	if err != nil {
		return nil, fmt.Errorf("wait for runtime hooks: %w", err)
	}
	if err := RunHooks(hooks.CreateContainer, done.State, nil); err != nil {
		return nil, fmt.Errorf("createContainer %w", err)
	}
	return done.State, nil
}

// startContainerHooks runs inside the container right before the execve.
func startContainerHooks(spec *specs.Spec, state *specs.State) error {
	if spec.Hooks == nil || len(spec.Hooks.StartContainer) == 0 || state == nil {
		return nil
	}
	st := *state
	st.Status = specs.StateCreated
	if err := RunHooks(spec.Hooks.StartContainer, &st, nil); err != nil {
		return fmt.Errorf("startContainer %w", err)
	}
	return nil
}

// unshareTime makes a time namespace for the helper's children and its
// execve (time namespaces are entered there, not at unshare) and sets its
// offsets, which the kernel accepts only while no process is inside.
func unshareTime(offsets map[string]specs.LinuxTimeOffset) error {
	if err := unix.Unshare(unix.CLONE_NEWTIME); err != nil {
		return fmt.Errorf("unshare time namespace: %w", err)
	}
	var b strings.Builder
	for clock, o := range offsets {
		fmt.Fprintf(&b, "%s %d %d\n", clock, o.Secs, o.Nanosecs)
	}
	if b.Len() == 0 {
		return nil
	}
	// Per process, not per thread: /proc/self is this main thread, the
	// one that unshared (locked since package init).
	if err := os.WriteFile("/proc/self/timens_offsets", []byte(b.String()), 0); err != nil {
		return fmt.Errorf("set time namespace offsets: %w", err)
	}
	return nil
}

// setupContainer builds the container's world from inside its new
// namespaces: root filesystem, hostname, sysctls.
func setupContainer(spec *specs.Spec, rootfs string, noPivot bool, trees map[int]int, beforePivot func() error) error {
	return setupRootfs(spec, rootfs, noPivot, trees, beforePivot, func() error { return setupSystem(spec) })
}

// setupSystem sets hostname, domainname and sysctls, inside the new root
// and before /proc/sys is made read-only.
func setupSystem(spec *specs.Spec) error {
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	if spec.Domainname != "" {
		if err := unix.Setdomainname([]byte(spec.Domainname)); err != nil {
			return fmt.Errorf("set domainname: %w", err)
		}
	}
	if err := security.ApplySysctls(spec.Linux.Sysctl); err != nil {
		return err
	}
	return nil
}

package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const initEnv = "_TUPPER_INIT"

func init() {
	if os.Getenv(initEnv) != "" {
		// Keep the main goroutine on the main thread for the helper's
		// whole life: per-thread state (setns, unshare(CLONE_FS), umask)
		// set up here is what execve hands to the container process.
		runtime.LockOSThread()
	}
}

// MaybeInit runs the init helper and never returns when this process was
// started as one by Create or Exec; otherwise it returns at once.
func MaybeInit() {
	if os.Getenv(initEnv) == "" {
		return
	}
	os.Exit(helperMain())
}

func helperMain() int {
	sock := os.NewFile(3, "sync")
	unix.CloseOnExec(3)
	fail := func(err error) int {
		var v *ValidationError
		if errors.As(err, &v) {
			sendMsg(sock, &message{Type: msgError, Error: v.Msg, Invalid: true})
		} else {
			sendMsg(sock, &message{Type: msgError, Error: err.Error()})
		}
		return 1
	}
	m, srcFds, err := recvMsg(sock)
	if err != nil {
		return 1
	}
	if m.Type != msgConfig || m.Config == nil || m.Config.Process == nil {
		return fail(errors.New("init helper: no config"))
	}
	cfg := m.Config
	// Bind sources the parent opened for us (see openBindSources): the
	// spec's mount i is bound from /proc/self/fd/<fds[MountFds[i]]>.
	// Detached idmapped mounts are attached from fds[TreeFds[i]].
	trees := map[int]int{}
	if cfg.Spec != nil {
		for i, k := range cfg.MountFds {
			if i < 0 || i >= len(cfg.Spec.Mounts) || k < 0 || k >= len(srcFds) {
				return fail(errors.New("init helper: bad mount source fds"))
			}
			cfg.Spec.Mounts[i].Source = fmt.Sprintf("/proc/self/fd/%d", srcFds[k])
		}
		for i, k := range cfg.TreeFds {
			if i < 0 || i >= len(cfg.Spec.Mounts) || k < 0 || k >= len(srcFds) {
				return fail(errors.New("init helper: bad mount fds"))
			}
			trees[i] = srcFds[k]
		}
	}
	if err := checkCgroupJoined(cfg.CgroupFds); err != nil {
		return fail(err)
	}
	unix.Umask(0)
	for fd := 4; fd < 4+len(cfg.NsFds); fd++ {
		unix.CloseOnExec(fd)
	}
	if cfg.NewIPCNs {
		// Per thread, like the cgroup namespace below: this locked main
		// thread mounts mqueue and execve's.
		if err := unix.Unshare(unix.CLONE_NEWIPC); err != nil {
			return fail(fmt.Errorf("unshare ipc namespace: %w", err))
		}
	}
	if cfg.NewCgroupNs {
		// The config arrives only after the parent has placed us in the
		// container's cgroup, which becomes this namespace's root. It is
		// per thread: this main thread is locked and is the one that
		// mounts cgroupfs and execve's.
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fail(fmt.Errorf("unshare cgroup namespace: %w", err))
		}
	}
	if err := helperJoins(cfg.NsFds); err != nil {
		return fail(err)
	}
	if cfg.NewTimeNs {
		if err := unshareTime(cfg.TimeOffsets); err != nil {
			return fail(err)
		}
	}
	var state *specs.State
	if !cfg.Exec {
		hooks := cfg.Spec.Hooks
		beforePivot := func() error {
			if hooks == nil || len(hooks.Prestart)+len(hooks.CreateRuntime)+len(hooks.CreateContainer)+len(hooks.StartContainer) == 0 { //nolint:staticcheck // Prestart is deprecated but still part of the spec
				return nil
			}
			if err := sendMsg(sock, &message{Type: msgHooks}); err != nil {
				return err
			}
			m, _, err := recvMsg(sock)
			if err != nil {
				return fmt.Errorf("wait for runtime hooks: %w", err)
			}
			if m.Type != msgContinue || m.State == nil {
				return fmt.Errorf("runtime hooks: unexpected %q %s", m.Type, m.Error)
			}
			state = m.State
			if err := RunHooks(hooks.CreateContainer, state, nil); err != nil {
				return fmt.Errorf("createContainer %w", err)
			}
			return nil
		}
		if err := setupContainer(cfg.Spec, cfg.Rootfs, cfg.NoPivotRoot, trees, beforePivot); err != nil {
			return fail(err)
		}
	}
	p, err := prepareProcess(cfg.Process, !cfg.Exec)
	if err != nil {
		return fail(err)
	}
	p.cfg = cfg
	var fds []int
	if cfg.Process.Terminal {
		master, err := setupTerminal(p)
		if err != nil {
			return fail(err)
		}
		fds = append(fds, master)
	}
	if err := sendMsg(sock, &message{Type: msgReady}, fds...); err != nil {
		return 1
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	m, _, err = recvMsg(sock)
	if err == io.EOF {
		// The parent gave up on us.
		return 1
	}
	if err != nil || m.Type != msgStart {
		return fail(fmt.Errorf("init helper: expected start, got %v %v", m, err))
	}
	if !cfg.Exec && cfg.Spec.Hooks != nil && len(cfg.Spec.Hooks.StartContainer) > 0 && state != nil {
		st := *state
		st.Status = specs.StateCreated
		if err := RunHooks(cfg.Spec.Hooks.StartContainer, &st, nil); err != nil {
			return fail(fmt.Errorf("startContainer %w", err))
		}
	}
	err = p.exec()
	// Only reached when something failed before or in execve.
	sendMsg(sock, &message{Type: msgError, Error: err.Error()})
	return 127
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
	for k, v := range spec.Linux.Sysctl {
		path := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
		if strings.Contains(k, "..") || strings.Contains(k, "/") {
			return fmt.Errorf("invalid sysctl %q", k)
		}
		if err := os.WriteFile(path, []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}

// setupTerminal allocates a pty from the container's own /dev/ptmx,
// makes the slave the controlling terminal and fds 0-2, and returns the
// master fd to hand to the parent.
func setupTerminal(p *preparedProcess) (int, error) {
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/ptmx in the container: %w", err)
	}
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(master)
		return -1, fmt.Errorf("unlock pty: %w", err)
	}
	// TIOCGPTPEER opens the slave through the master, without a path
	// lookup that the container's /dev/pts could redirect.
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	slave := int(r)
	if errno != 0 {
		err := error(errno)
		n, err2 := unix.IoctlGetInt(master, unix.TIOCGPTN)
		if err2 != nil {
			unix.Close(master)
			return -1, fmt.Errorf("get pty peer: %v / %v", err, err2)
		}
		slave, err = unix.Open("/dev/pts/"+strconv.Itoa(n), unix.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			unix.Close(master)
			return -1, fmt.Errorf("open pty slave: %w", err)
		}
	}
	if sz := p.spec.ConsoleSize; sz != nil {
		unix.IoctlSetWinsize(slave, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(sz.Height), Col: uint16(sz.Width)})
	}
	if err := unix.Fchown(slave, p.uid, p.gid); err != nil {
		unix.Close(master)
		unix.Close(slave)
		return -1, fmt.Errorf("chown pty slave: %w", err)
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(slave, fd, 0); err != nil {
			unix.Close(master)
			return -1, fmt.Errorf("dup pty slave: %w", err)
		}
	}
	if slave > 2 {
		unix.Close(slave)
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		unix.Close(master)
		return -1, fmt.Errorf("set controlling terminal: %w", err)
	}
	return master, nil
}

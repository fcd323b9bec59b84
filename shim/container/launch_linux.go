package container

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/shim/container/protocol"
	"github.com/tupper/tupper/shim/security"
	"golang.org/x/sys/unix"
)

// launch is one helper about to start: the files it inherits from fd 3 on
// (the sync socket first) and the environment that tells its constructor
// what to do (see shim/nsenter).
type launch struct {
	files []*os.File
	env   []string
}

// addFile passes f to the helper and returns its fd number there.
func (l *launch) addFile(f *os.File) int {
	l.files = append(l.files, f)
	return 2 + len(l.files)
}

// newLaunch lays out the helper's fds and environment for plan and join,
// and records in cfg where its namespace and cgroup files are.
func newLaunch(sync *os.File, plan *nsPlan, join protocol.CgroupJoin, cfg *protocol.Config) *launch {
	l := &launch{env: []string{helperEnv}}
	if fd := l.addFile(sync); fd != protocol.SyncFd {
		panic("the sync socket must be the helper's fd 3")
	}
	var entries []string
	for _, j := range plan.helper {
		fd := l.addFile(j.f)
		if cfg.NsFds == nil {
			cfg.NsFds = map[specs.LinuxNamespaceType]int{}
		}
		cfg.NsFds[j.typ] = fd
		entries = append(entries, fmt.Sprintf("%s:%d", procNsName[j.typ], fd))
	}
	if len(join.TasksFiles) > 0 {
		var fds []string
		for _, f := range join.TasksFiles {
			fd := l.addFile(f)
			cfg.CgroupFds = append(cfg.CgroupFds, fd)
			fds = append(fds, strconv.Itoa(fd))
		}
		l.env = append(l.env, protocol.EnvCgroupFds+"="+strings.Join(fds, ","))
	}
	if len(entries) > 0 {
		l.env = append(l.env, protocol.EnvNsenter+"="+strings.Join(entries, ","))
	}
	if plan.unshare != 0 {
		l.env = append(l.env, protocol.EnvUnshare+"="+strconv.Itoa(int(plan.unshare)))
	}
	if plan.fork {
		l.env = append(l.env, protocol.EnvFork+"="+forkMode())
	}
	l.env = append(l.env, protocol.EnvFds+"="+strconv.Itoa(len(l.files)))
	return l
}

// command is the helper's exec.Cmd: cloned with plan's new namespaces (a
// new user namespace mapped, the helper its root), into join's v2 cgroup
// directory when it can be, with stdio unless the process has a terminal.
func (c *Container) command(l *launch, plan *nsPlan, join protocol.CgroupJoin, stdio *Stdio) *exec.Cmd {
	cmd := &exec.Cmd{
		Path:        c.initPath,
		Args:        []string{"tupper-init", c.ID},
		Env:         l.env,
		ExtraFiles:  l.files,
		SysProcAttr: &syscall.SysProcAttr{Cloneflags: plan.clone, Setsid: true},
	}
	if join.Dir != nil && !movedIntoDir(plan, join) {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(join.Dir.Fd())
	}
	if plan.clone&unix.CLONE_NEWUSER != 0 {
		// The parent writes the maps while the child waits; the child
		// then becomes root of the namespace before its execve, so the
		// helper starts with every capability there (an execve by an
		// unmapped uid would drop them all).
		cmd.SysProcAttr.UidMappings = idMaps(plan.uidMap)
		cmd.SysProcAttr.GidMappings = idMaps(plan.gidMap)
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	} else if c.Bundle != "" {
		// Not in a new user namespace: os/exec changes directory after
		// the credentials, and the mapped root may not search the path.
		cmd.Dir = c.Bundle
	}
	// Only *os.File values: anything else would make os/exec start
	// copying goroutines that call Wait-like logic behind our back.
	if stdio != nil {
		if stdio.Stdin != nil {
			cmd.Stdin = stdio.Stdin
		}
		if stdio.Stdout != nil {
			cmd.Stdout = stdio.Stdout
		}
		if stdio.Stderr != nil {
			cmd.Stderr = stdio.Stderr
		}
	}
	return cmd
}

// movedIntoDir reports whether a v2 helper is moved into the cgroup
// directory after it started rather than cloned into it: a parent thread
// that joins a cgroup namespace first cannot clone into a cgroup outside
// it where cgroup2 delegates by namespace (nsdelegate).
func movedIntoDir(plan *nsPlan, join protocol.CgroupJoin) bool {
	return join.Dir != nil && joinsCgroupNs(plan.parent)
}

// startHelper starts the helper for cfg and returns it, running and not
// yet configured: in its cgroup, its limits set (for a user-namespaced
// helper, which cannot set them itself). Its handshake is at the
// "spawned" step.
func (c *Container) startHelper(cfg *protocol.Config, plan *nsPlan, stdio *Stdio) (*Process, error) {
	parent, child, err := protocol.NewPair()
	if err != nil {
		return nil, err
	}
	join, err := c.cgroup.Join()
	if err != nil {
		parent.Close()
		child.Close()
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	defer join.Close()
	l := newLaunch(child, plan, join, cfg)
	cmd := c.command(l, plan, join, stdio)
	wait, err := startJoined(cmd, c.starter, plan.parent)
	child.Close()
	if err != nil {
		parent.Close()
		return nil, fmt.Errorf("start init helper: %w", err)
	}
	pid, proc := cmd.Process.Pid, cmd.Process
	if plan.fork {
		if pid, proc, wait, err = c.adoptForked(parent, cmd, wait); err != nil {
			parent.Close()
			return nil, err
		}
	}
	p := newProcess(pid, proc, wait, parent)
	p.hs.seccomp = c.seccompAgent(pid)
	if err := c.place(p, plan, join, cfg); err != nil {
		return nil, p.hs.fail(err)
	}
	return p, nil
}

// place puts a started helper in the container's cgroup and, for one in
// a user namespace, sets what it can no longer set itself from there: its
// rlimits and oom_score_adj (runc sets these from the parent too; the
// helper repeats the same values, which needs no privilege).
func (c *Container) place(p *Process, plan *nsPlan, join protocol.CgroupJoin, cfg *protocol.Config) error {
	if movedIntoDir(plan, join) {
		if err := moveToCgroupDir(join.Dir, p.pid); err != nil {
			return err
		}
	}
	if plan.userns() {
		if err := setProcessLimits(p.pid, cfg.Process.Spec); err != nil {
			return err
		}
	}
	return c.cgroup.Spawned(p.pid)
}

// seccompAgent hands the seccomp listener fd of the helper pid to the
// agent at the profile's listenerPath, from here: the path is the host's,
// and dialled from the container it would be the container's to answer.
func (c *Container) seccompAgent(pid int) func(fd int) error {
	sc := c.spec.Linux.Seccomp
	if sc == nil || sc.ListenerPath == "" {
		return nil
	}
	return func(fd int) error {
		initPid := pid
		if c.init != nil {
			initPid = c.init.pid
		}
		state := specs.State{Version: specs.Version, ID: c.ID, Status: specs.StateCreated, Pid: initPid,
			Bundle: c.Bundle, Annotations: c.spec.Annotations}
		return security.SendListenerFd(sc.ListenerPath, sc.ListenerMetadata, fd, pid, state)
	}
}

// forkMode is how shim/nsenter's constructor forks a helper into its pid
// namespace: with the libc's fork when this process is a child subreaper
// (the shim), which then inherits the helper, else with CLONE_PARENT (see
// protocol.ForkToSubreaper). Either way the helper is our child once the
// intermediate has exited.
func forkMode() string {
	var on int32
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&on)), 0, 0, 0); err == nil && on != 0 {
		return protocol.ForkToSubreaper
	}
	return protocol.ForkCloneParent
}

// adoptForked takes over the helper that shim/nsenter's constructor forked
// into a pid namespace (our child: see forkMode): it reads its pid, reaps
// the intermediate process and waits for the helper through
// Options.Adopt.
func (c *Container) adoptForked(ch *protocol.Channel, cmd *exec.Cmd, wait func() (int, error)) (int, *os.Process, func() (int, error), error) {
	m, _, err := protocol.Expect[*protocol.Forked](ch)
	st, _ := wait() // the intermediate exits once it has sent the pid
	cmd.Process.Release()
	if err != nil {
		return 0, nil, nil, helperError(err, fmt.Sprintf("init helper exited before forking into its pid namespace (status %d)", st))
	}
	w, err := c.adopt(m.Pid)
	if err == nil {
		var proc *os.Process
		if proc, err = os.FindProcess(m.Pid); err == nil {
			return m.Pid, proc, w, nil
		}
	}
	unix.Kill(m.Pid, unix.SIGKILL)
	return 0, nil, nil, fmt.Errorf("adopt init helper %d: %w", m.Pid, err)
}

// DefaultAdopt waits for a child that os/exec did not start, with a pidfd.
// Use it only in processes that do not reap children on their own.
func DefaultAdopt(pid int) (func() (int, error), error) {
	proc, err := os.FindProcess(pid)
	if err != nil {
		return nil, err
	}
	return func() (int, error) {
		defer proc.Release()
		ps, err := proc.Wait()
		if err != nil {
			return -1, err
		}
		return ExitStatus(ps.Sys().(syscall.WaitStatus)), nil
	}, nil
}

// setProcessLimits sets the rlimits and oom_score_adj of the helper pid
// from the parent.
func setProcessLimits(pid int, proc *specs.Process) error {
	for _, rl := range proc.Rlimits {
		lim := unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}
		if err := unix.Prlimit(pid, rlimitNames[rl.Type], &lim, nil); err != nil {
			return fmt.Errorf("set %s soft=%d hard=%d: %w", rl.Type, rl.Soft, rl.Hard, err)
		}
	}
	if proc.OOMScoreAdj != nil {
		path := fmt.Sprintf("/proc/%d/oom_score_adj", pid)
		if err := os.WriteFile(path, []byte(strconv.Itoa(*proc.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("set oom_score_adj to %d: %w", *proc.OOMScoreAdj, err)
		}
	}
	return nil
}

package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/shim/security"
	"golang.org/x/sys/unix"
)

// Starter starts cmd and returns a function that waits for it and returns
// its exit status (128+signal when killed). The shim passes one backed by
// its reaper, so that os/exec never races the subreaper's wait4(-1).
type Starter func(cmd *exec.Cmd) (wait func() (int, error), err error)

// DefaultStarter starts cmd with os/exec and waits with cmd.Wait. Use it
// only in processes that do not reap children on their own.
func DefaultStarter(cmd *exec.Cmd) (func() (int, error), error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() (int, error) {
		err := cmd.Wait()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return -1, err
		}
		return ExitStatus(cmd.ProcessState.Sys().(syscall.WaitStatus)), nil
	}, nil
}

// ExitStatus converts a wait status to a shell-style exit status.
func ExitStatus(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// Options describe a container to create.
type Options struct {
	ID     string
	Bundle string // absolute; relative root.path and bind sources resolve against it
	Spec   *specs.Spec
	Stdio  Stdio
	// Starter starts the helper process; nil means DefaultStarter.
	Starter Starter
	// NoPivotRoot uses MS_MOVE + chroot instead of pivot_root, for hosts
	// whose root is an initramfs (runc's --no-pivot).
	NoPivotRoot bool
	// InitPath is the binary re-executed as the init helper; it must call
	// MaybeInit. Empty means /proc/self/exe.
	InitPath string
	// Adopt returns a function that waits for pid, a child this process
	// did not start with os/exec: the init helper of a container with a
	// new pid namespace in a joined user namespace, which shim/nsenter
	// forks with CLONE_PARENT. It must not miss an exit that happens
	// after it was called. nil means DefaultAdopt; a process that reaps
	// its children passes one backed by its reaper, like Starter.
	Adopt func(pid int) (wait func() (int, error), err error)
	// OnSpawn, when set, is called with the pid of every helper of this
	// container (its init, then each exec) right after the helper is
	// started and before it does anything: the helper waits for its
	// configuration, which is sent only once OnSpawn returns. The shim
	// moves the helper into the container's cgroup here, so that limits
	// hold from the first instruction and a new cgroup namespace, which
	// the helper creates after this point, has that cgroup as its root.
	// An error fails Create or Exec; the helper is killed and reaped.
	OnSpawn func(pid int) error
	// CgroupJoin, when set, is called before each helper is started and
	// says how the helper gets into the container's cgroup by itself
	// (made by then), or returns the zero CgroupJoin. Unlike OnSpawn
	// moving it there, which takes the kernel's global threadgroup lock
	// and waits for an RCU grace period (7 to 25 ms on these hosts), that
	// costs next to nothing. OnSpawn is still called; with a join it has
	// nothing to move. The files are closed once the helper has started.
	CgroupJoin func() (CgroupJoin, error)
}

// CgroupJoin is how a new helper enters the container's cgroup by itself.
type CgroupJoin struct {
	// TasksFiles (cgroup v1) are the cgroup's "tasks" files, open for
	// reading and writing: the helper, still single-threaded in
	// shim/nsenter's constructor, writes "0" to each (a thread that moves
	// itself skips the global lock), then checks that it is listed.
	TasksFiles []*os.File
	// Dir (cgroup v2) is the cgroup's directory: the helper is cloned
	// straight into it (clone3 with CLONE_INTO_CGROUP).
	Dir *os.File
}

func (j CgroupJoin) close() {
	for _, f := range j.TasksFiles {
		f.Close()
	}
	if j.Dir != nil {
		j.Dir.Close()
	}
}

// Container is a created (and possibly started) container.
type Container struct {
	ID         string
	Bundle     string
	spec       *specs.Spec
	rootfs     string
	starter    Starter
	initPath   string
	onSpawn    func(pid int) error
	cgroupJoin func() (CgroupJoin, error)
	adopt      func(pid int) (func() (int, error), error)
	init       *Process
	lsm        security.LSM
}

// initConfig is what every process of the container gets: the container's
// seccomp profile, personality and LSM labels.
func (c *Container) initConfig(proc *specs.Process) *initConfig {
	cfg := &initConfig{Process: proc, ID: c.ID, Bundle: c.Bundle, LSM: c.lsm}
	if l := c.spec.Linux; l != nil {
		cfg.Seccomp, cfg.Personality = l.Seccomp, l.Personality
	}
	return cfg
}

// checkSecurity refuses, before any process exists, what the helper could
// not apply: a seccomp profile that does not compile, a sysctl that is not
// the container's to set, a bad personality/ioPriority/scheduler, or an
// LSM label the host cannot apply (unless the spec allows that).
func checkSecurity(spec *specs.Spec) (security.LSM, error) {
	if spec.Linux != nil && spec.Linux.Seccomp != nil {
		f, err := security.CompileSeccomp(spec.Linux.Seccomp)
		if err != nil {
			return security.LSM{}, invalid("%v", err)
		}
		f.Close()
	}
	if spec.Process != nil {
		if _, err := security.ParseCapabilities(spec.Process.Capabilities); err != nil {
			return security.LSM{}, invalid("%v", err)
		}
	}
	if err := security.CheckSysctls(spec); err != nil {
		return security.LSM{}, invalid("%v", err)
	}
	if err := security.CheckAttrs(spec); err != nil {
		return security.LSM{}, invalid("%v", err)
	}
	lsm, err := security.PlanLSM(context.Background(), spec)
	if err != nil {
		return security.LSM{}, invalid("%v", err)
	}
	return lsm, nil
}

// Process is the container's init or an exec'd process.
type Process struct {
	pid     int
	proc    *os.Process // signals go through its pidfd: no recycled pid
	console *os.File
	sync    *os.File

	mu      sync.Mutex
	started bool
	done    chan struct{}
	status  int
	waitErr error
	exited  time.Time
}

// Pid is the process id in the caller's pid namespace.
func (p *Process) Pid() int { return p.pid }

// Console is the pty master when the process has a terminal, else nil.
// The caller owns it.
func (p *Process) Console() *os.File { return p.console }

// Done is closed when the process has exited and was reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait blocks until the process exits and returns its exit status.
func (p *Process) Wait() (int, time.Time, error) {
	<-p.done
	return p.status, p.exited, p.waitErr
}

// Signal sends sig to the process unless it has already been reaped.
// It goes through the process' pidfd, so a pid recycled between the reap
// and this call is never signalled.
func (p *Process) Signal(sig unix.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return p.proc.Signal(sig)
}

// start releases a created process: it sends "start" and waits for the
// helper's execve, seen as EOF on the sync socket.
func (p *Process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return errors.New("process already started")
	}
	if p.sync == nil {
		return errors.New("process has no sync channel")
	}
	defer func() {
		p.sync.Close()
		p.sync = nil
	}()
	if err := sendMsg(p.sync, &message{Type: msgStart}); err != nil {
		return fmt.Errorf("signal start: %w", err)
	}
	m, _, err := recvMsg(p.sync)
	if err == io.EOF {
		p.started = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("wait for exec: %w", err)
	}
	if m.Type == msgError {
		return errors.New(m.Error)
	}
	return fmt.Errorf("unexpected sync message %q", m.Type)
}

// Create builds the container and leaves its init blocked before exec.
// On error nothing is left behind: the helper is killed and reaped, and
// its mounts lived only in its own mount namespace.
func Create(opts Options) (*Container, error) {
	spec := opts.Spec
	if spec == nil {
		return nil, invalid("no spec")
	}
	if err := validate(spec); err != nil {
		return nil, err
	}
	lsm, err := checkSecurity(spec)
	if err != nil {
		return nil, err
	}
	rootfs, err := rootfsPath(opts.Bundle, spec)
	if err != nil {
		return nil, err
	}
	c := &Container{
		lsm:        lsm,
		ID:         opts.ID,
		Bundle:     opts.Bundle,
		spec:       spec,
		rootfs:     rootfs,
		starter:    opts.Starter,
		initPath:   opts.InitPath,
		onSpawn:    opts.OnSpawn,
		cgroupJoin: opts.CgroupJoin,
		adopt:      opts.Adopt,
	}
	if c.starter == nil {
		c.starter = DefaultStarter
	}
	if c.initPath == "" {
		c.initPath = "/proc/self/exe"
	}
	// Bind sources relative to the bundle become absolute here, because
	// the helper's working directory is not something to rely on.
	sp := *spec
	sp.Mounts = append([]specs.Mount(nil), spec.Mounts...)
	for i, m := range sp.Mounts {
		if isBind(m) && m.Source != "" && !filepath.IsAbs(m.Source) {
			sp.Mounts[i].Source = filepath.Join(opts.Bundle, m.Source)
		}
	}
	var plan nsPlan
	defer plan.close()
	newCgroupNs, newTimeNs := false, false
	for _, ns := range spec.Linux.Namespaces {
		if ns.Path == "" {
			switch ns.Type {
			case specs.CgroupNamespace:
				// Not a clone flag: the helper unshares it once OnSpawn has
				// moved it into the container's cgroup (see cgroupns below).
				newCgroupNs = true
			case specs.TimeNamespace:
				// clone(2) has no room for CLONE_NEWTIME; the helper
				// unshares it, and the program enters it at execve.
				newTimeNs = true
			default:
				plan.clone |= nsFlags[ns.Type]
			}
			continue
		}
		f, err := openNs(ns.Path, ns.Type)
		if err != nil {
			return nil, invalid("%v", err)
		}
		plan.add(nsJoin{typ: ns.Type, f: f})
	}
	if plan.joinsUser() {
		// The new namespaces must belong to the joined user namespace,
		// so the constructor creates them after joining it.
		plan.unshare, plan.clone = plan.clone, 0
		// unshare(CLONE_NEWPID) only moves the caller's children: the
		// constructor then forks the helper into it (see shim/nsenter).
		plan.fork = plan.unshare&unix.CLONE_NEWPID != 0
	}
	cfg := c.initConfig(spec.Process)
	if plan.clone&unix.CLONE_NEWUSER != 0 {
		plan.uidMap, plan.gidMap = spec.Linux.UIDMappings, spec.Linux.GIDMappings
		// An ipc namespace keeps the credentials of whoever made it: its
		// mqueue filesystem's root belongs to them. Made by the helper
		// as the namespace's root, /dev/mqueue belongs to that root (as
		// under runc, whose nsexec unshares after becoming it) instead
		// of the unmapped host root.
		if plan.clone&unix.CLONE_NEWIPC != 0 {
			plan.clone &^= unix.CLONE_NEWIPC
			cfg.NewIPCNs = true
		}
	}
	cfg.Spec, cfg.Rootfs, cfg.NoPivotRoot, cfg.NewCgroupNs = &sp, rootfs, opts.NoPivotRoot, newCgroupNs
	if newTimeNs {
		cfg.NewTimeNs, cfg.TimeOffsets = true, spec.Linux.TimeOffsets
	}
	p, err := c.spawn(cfg, &plan, opts.Stdio)
	if err != nil {
		return nil, err
	}
	c.init = p
	return c, nil
}

// Init returns the container's init process.
func (c *Container) Init() *Process { return c.init }

// Pid is the init process id.
func (c *Container) Pid() int { return c.init.pid }

// Spec returns the spec the container was created from.
func (c *Container) Spec() *specs.Spec { return c.spec }

// Start execs the container's program.
func (c *Container) Start() error { return c.init.start() }

// Exec runs proc inside the running container, joining all of its
// namespaces, and returns once the program has been exec'd.
func (c *Container) Exec(proc *specs.Process, stdio Stdio) (*Process, error) {
	if err := validateProcess(proc); err != nil {
		return nil, err
	}
	select {
	case <-c.init.done:
		return nil, errors.New("container init has exited")
	default:
	}
	var plan nsPlan
	defer plan.close()
	for _, ns := range c.spec.Linux.Namespaces {
		path := fmt.Sprintf("/proc/%d/ns/%s", c.init.pid, procNsName[ns.Type])
		f, err := openNs(path, ns.Type)
		if err != nil {
			return nil, err
		}
		plan.add(nsJoin{typ: ns.Type, f: f})
	}
	// The files were opened by pid. Signal 0 through init's pidfd proves
	// init was not reaped meanwhile, so they are its namespaces and not
	// those of a process that recycled the pid.
	if err := c.init.Signal(0); err != nil {
		return nil, fmt.Errorf("container init has exited: %w", err)
	}
	cfg := c.initConfig(proc)
	cfg.Exec = true
	if proc.ApparmorProfile != "" || proc.SelinuxLabel != "" {
		// An exec may ask for its own labels; the same rules decide.
		sp := *c.spec
		sp.Process = proc
		lsm, err := security.PlanLSM(context.Background(), &sp)
		if err != nil {
			return nil, invalid("%v", err)
		}
		cfg.LSM = lsm
	}
	p, err := c.spawn(cfg, &plan, stdio)
	if err != nil {
		return nil, err
	}
	if err := p.start(); err != nil {
		p.Signal(unix.SIGKILL)
		p.Wait()
		return nil, err
	}
	return p, nil
}

// adoptForked takes over the helper that shim/nsenter's constructor forked
// (with CLONE_PARENT, so it is our child) into a new pid namespace: it
// reads its pid, reaps the intermediate process and waits for the helper
// through Options.Adopt.
func (c *Container) adoptForked(sock *os.File, cmd *exec.Cmd, wait func() (int, error)) (int, *os.Process, func() (int, error), error) {
	m, _, err := recvMsg(sock)
	st, _ := wait() // the intermediate exits once it has sent the pid
	cmd.Process.Release()
	switch {
	case err == io.EOF:
		return 0, nil, nil, fmt.Errorf("init helper exited before forking into its pid namespace (status %d)", st)
	case err != nil:
		return 0, nil, nil, fmt.Errorf("init helper: %w", err)
	case m.Type == msgError:
		return 0, nil, nil, errors.New(m.Error)
	case m.Type != msgPid || m.Pid <= 0:
		return 0, nil, nil, fmt.Errorf("init helper: expected its pid, got %q", m.Type)
	}
	adopt := c.adopt
	if adopt == nil {
		adopt = DefaultAdopt
	}
	w, err := adopt(m.Pid)
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

// nsPlan is how a helper gets its namespaces (see nsjoin_linux.go).
type nsPlan struct {
	clone   uintptr  // new namespaces: clone flags of the helper
	parent  []nsJoin // joined on the parent's thread before the fork
	helper  []nsJoin // joined by the helper, in helperJoinOrder
	unshare uintptr  // new namespaces the constructor unshares after its joins
	fork    bool     // the constructor forks the helper into its new pid namespace
	// uidMap and gidMap are written for a new user namespace.
	uidMap, gidMap []specs.LinuxIDMapping
}

func (p *nsPlan) add(j nsJoin) {
	if !joinedByHelper(j.typ) {
		p.parent = append(p.parent, j)
		return
	}
	p.helper = append(p.helper, j)
	sort.SliceStable(p.helper, func(a, b int) bool {
		return helperJoinOrder[p.helper[a].typ] < helperJoinOrder[p.helper[b].typ]
	})
}

func (p *nsPlan) joinsUser() bool {
	for _, j := range p.helper {
		if j.typ == specs.UserNamespace {
			return true
		}
	}
	return false
}

// userns reports whether the helper ends up in a user namespace other
// than ours, where it cannot raise rlimits or lower oom_score_adj.
func (p *nsPlan) userns() bool { return p.clone&unix.CLONE_NEWUSER != 0 || p.joinsUser() }

func (p *nsPlan) close() {
	for _, j := range append(p.parent, p.helper...) {
		j.f.Close()
	}
}

func idMaps(m []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	var out []syscall.SysProcIDMap
	for _, e := range m {
		out = append(out, syscall.SysProcIDMap{ContainerID: int(e.ContainerID), HostID: int(e.HostID), Size: int(e.Size)})
	}
	return out
}

// spawn starts the helper, sends cfg and waits until it is ready.
func (c *Container) spawn(cfg *initConfig, plan *nsPlan, stdio Stdio) (_ *Process, retErr error) {
	parentSock, childSock, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			parentSock.Close()
		}
	}()
	// Namespaces the helper joins itself are its fds 4, 5, ... (fd 3 is
	// the sync socket).
	extra := []*os.File{childSock}
	var entries []string
	for _, j := range plan.helper {
		fd := 3 + len(extra)
		extra = append(extra, j.f)
		if cfg.NsFds == nil {
			cfg.NsFds = map[specs.LinuxNamespaceType]int{}
		}
		cfg.NsFds[j.typ] = fd
		entries = append(entries, fmt.Sprintf("%s:%d", procNsName[j.typ], fd))
	}
	env := []string{initEnv + "=1"}
	var join CgroupJoin
	if c.cgroupJoin != nil {
		if join, err = c.cgroupJoin(); err != nil {
			childSock.Close()
			return nil, fmt.Errorf("cgroup: %w", err)
		}
	}
	defer join.close()
	if len(join.TasksFiles) > 0 {
		var fds []string
		for _, f := range join.TasksFiles {
			cfg.CgroupFds = append(cfg.CgroupFds, 3+len(extra))
			fds = append(fds, strconv.Itoa(3+len(extra)))
			extra = append(extra, f)
		}
		env = append(env, cgroupFdsEnv+"="+strings.Join(fds, ","))
	}
	if needsConstructor(plan.helper) || plan.unshare != 0 {
		env = append(env, nsenterEnv+"="+strings.Join(entries, ","))
		if plan.unshare != 0 {
			env = append(env, nsenterUnshareEnv+"="+strconv.Itoa(int(plan.unshare)))
		}
		if plan.fork {
			env = append(env, nsenterForkEnv+"=1")
		}
	}
	cmd := &exec.Cmd{
		Path:       c.initPath,
		Args:       []string{"tupper-init", c.ID},
		Env:        env,
		ExtraFiles: extra,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: plan.clone,
			Setsid:     true,
		},
	}
	// A parent thread that joins a cgroup namespace first (an exec into a
	// container with one) cannot clone into a cgroup outside it where
	// cgroup2 delegates by namespace (nsdelegate): such a helper is moved
	// through the directory's cgroup.procs instead, once it exists.
	moveIntoDir := join.Dir != nil && joinsCgroupNs(plan.parent)
	if join.Dir != nil && !moveIntoDir {
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
	}
	if c.Bundle != "" && plan.clone&unix.CLONE_NEWUSER == 0 {
		// Not in a new user namespace: os/exec changes directory after
		// the credentials, and the mapped root may not search the path.
		cmd.Dir = c.Bundle
	}
	if !cfg.Process.Terminal {
		// Only *os.File values: anything else would make os/exec start
		// copying goroutines that call Wait-like logic behind our back.
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
	wait, err := startJoined(cmd, c.starter, plan.parent)
	childSock.Close()
	if err != nil {
		return nil, fmt.Errorf("start init helper: %w", err)
	}
	pid, proc := cmd.Process.Pid, cmd.Process
	if plan.fork {
		if pid, proc, wait, err = c.adoptForked(parentSock, cmd, wait); err != nil {
			return nil, err
		}
	}
	p := &Process{pid: pid, proc: proc, sync: parentSock, done: make(chan struct{})}
	go func() {
		st, err := wait()
		p.status, p.waitErr, p.exited = st, err, time.Now()
		close(p.done)
		// Only now: Signal must not find a released handle while the
		// process still counts as running.
		proc.Release()
	}()
	fail := func(err error) (*Process, error) {
		p.Signal(unix.SIGKILL)
		<-p.done
		// shim/nsenter's constructor reports a failed join on the socket
		// and exits before anything reads it: prefer its message.
		if m, _, rerr := recvMsg(parentSock); rerr == nil && m.Type == msgError {
			return nil, errors.New(m.Error)
		}
		return nil, err
	}
	if moveIntoDir {
		if err := moveToCgroupDir(join.Dir, p.pid); err != nil {
			return fail(err)
		}
	}
	if plan.userns() {
		// What the helper can no longer do from inside the user
		// namespace, the parent does now, before the helper proceeds
		// (runc sets these from the parent too). The helper repeats the
		// same values, which needs no privilege.
		if err := setProcessLimits(p.pid, cfg.Process); err != nil {
			return fail(err)
		}
	}
	if c.onSpawn != nil {
		// The helper blocks on the config message until this returns.
		if err := c.onSpawn(p.pid); err != nil {
			return fail(err)
		}
	}
	var mountFds []int
	defer func() {
		for _, fd := range mountFds {
			unix.Close(fd)
		}
	}()
	if cfg.Spec != nil {
		if cfg.MountFds, cfg.TreeFds, mountFds, err = c.openMountSources(p.pid, cfg.Spec.Mounts, plan.userns()); err != nil {
			return fail(err)
		}
	}
	if err := sendMsg(parentSock, &message{Type: msgConfig, Config: cfg}, mountFds...); err != nil {
		return fail(fmt.Errorf("send config to init helper: %w", err))
	}
	m, fds, err := recvMsg(parentSock)
	if err == nil && m.Type == msgHooks && cfg.Spec != nil {
		// The container's namespaces and mounts exist; the runtime's
		// hooks run now, before the helper pivots.
		state := &specs.State{Version: specs.Version, ID: c.ID, Status: specs.StateCreating, Pid: p.pid,
			Bundle: c.Bundle, Annotations: cfg.Spec.Annotations}
		h := cfg.Spec.Hooks
		if err := RunHooks(h.Prestart, state, c.starter); err != nil { //nolint:staticcheck // Prestart is deprecated but still part of the spec
			return fail(fmt.Errorf("prestart %w", err))
		}
		if err := RunHooks(h.CreateRuntime, state, c.starter); err != nil {
			return fail(fmt.Errorf("createRuntime %w", err))
		}
		if err := sendMsg(parentSock, &message{Type: msgContinue, State: state}); err != nil {
			return fail(err)
		}
		m, fds, err = recvMsg(parentSock)
	}
	if err == io.EOF {
		p.Signal(unix.SIGKILL)
		st, _, _ := p.Wait()
		return nil, fmt.Errorf("init helper exited before it was ready (status %d)", st)
	}
	if err != nil {
		return fail(err)
	}
	switch m.Type {
	case msgReady:
	case msgError:
		if m.Invalid {
			return fail(&ValidationError{Msg: m.Error})
		}
		return fail(errors.New(m.Error))
	default:
		return fail(fmt.Errorf("unexpected sync message %q", m.Type))
	}
	if cfg.Process.Terminal {
		if len(fds) != 1 {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return fail(errors.New("init helper sent no pty master"))
		}
		p.console = os.NewFile(uintptr(fds[0]), "pty-master")
	}
	return p, nil
}

// Pids lists the processes in the container's pid namespace, init first.
// Without a pid namespace of its own only init is known.
func (c *Container) Pids() ([]int, error) {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.init.pid))
	if err != nil {
		return nil, err
	}
	pids := []int{c.init.pid}
	if !c.OwnPidNamespace() {
		return pids, nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == c.init.pid {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && l == ns {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// KillAll sends sig to every process of the container.
// OwnPidNamespace reports whether the container has a pid namespace of its
// own, whose processes the kernel kills when init exits. Without one (a
// pod's shared namespace, or the host's), init's children outlive it.
func (c *Container) OwnPidNamespace() bool {
	for _, n := range c.spec.Linux.Namespaces {
		if n.Type == specs.PIDNamespace && n.Path == "" {
			return true
		}
	}
	return false
}

func (c *Container) KillAll(sig unix.Signal) error {
	pids, err := c.Pids()
	if err != nil {
		return err
	}
	return SignalPids(pids, sig)
}

// SignalPids sends sig to each of pids; a process that is already gone is
// not an error.
func SignalPids(pids []int, sig unix.Signal) error {
	for _, pid := range pids {
		if err := unix.Kill(pid, sig); err != nil && err != unix.ESRCH {
			return err
		}
	}
	return nil
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// openMountSources opens, for the helper with pid, what it mounts from
// fds rather than paths: idmapped bind mounts, made here as detached
// mounts (see idmap_linux.go), and, for a helper in a user namespace, the
// sources of the other bind mounts, which its root may not be allowed to
// reach (a bundle's files, a volume under a 0700 directory). Those are
// opened O_PATH, as we are allowed, through the helper's own root
// (/proc/<pid>/root), so each refers to the helper's mount namespace, where
// it can be bind-mounted from. Symlinks are resolved first, on our side:
// absolute ones would otherwise resolve against our root, in our mount
// namespace. runc likewise opens mount sources before the container's user
// namespace is entered. It returns, by index in mounts, the index of each
// fd in fds.
func (c *Container) openMountSources(pid int, mounts []specs.Mount, userns bool) (paths, trees map[int]int, fds []int, err error) {
	paths, trees = map[int]int{}, map[int]int{}
	defer func() {
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			fds = nil
		}
	}()
	for i, m := range mounts {
		if !isBind(m) || (!userns && !isIDMapped(m)) {
			continue
		}
		if len(fds) == maxFds {
			return nil, nil, fds, fmt.Errorf("more than %d bind mounts opened for the helper", maxFds)
		}
		if isIDMapped(m) {
			fd, err := c.openIDMapped(pid, m)
			if err != nil {
				return nil, nil, fds, err
			}
			trees[i] = len(fds)
			fds = append(fds, fd)
			continue
		}
		src, err := filepath.EvalSymlinks(m.Source)
		if err == nil && !filepath.IsAbs(src) {
			err = errors.New("the source must be an absolute path")
		}
		if err == nil {
			var fd int
			fd, err = unix.Open(fmt.Sprintf("/proc/%d/root%s", pid, src), unix.O_PATH|unix.O_CLOEXEC, 0)
			if err == nil {
				paths[i] = len(fds)
				fds = append(fds, fd)
				continue
			}
		}
		return nil, nil, fds, fmt.Errorf("mount %s (bind) on %s: %w", m.Source, m.Destination, err)
	}
	return paths, trees, fds, nil
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

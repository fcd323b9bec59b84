package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/shim/container/protocol"
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

// CgroupPlacer puts every helper of a container into the container's
// cgroup before the helper runs code of its own. shim/cgroups' *Placement
// is the one the shim and tupper-run use; with none, the helpers stay in
// the parent's cgroup.
type CgroupPlacer interface {
	// Join is called before each helper starts: how the helper enters the
	// cgroup by itself, or the zero Join. Create closes the files.
	Join() (protocol.CgroupJoin, error)
	// Spawned is called with the helper's pid once it runs and before it
	// goes on; it moves the helper unless the helper entered by itself.
	// An error fails Create or Exec.
	Spawned(pid int) error
}

// noCgroup is the CgroupPlacer of a container created without one: its
// helpers stay in the parent's cgroup.
type noCgroup struct{}

func (noCgroup) Join() (protocol.CgroupJoin, error) { return protocol.CgroupJoin{}, nil }
func (noCgroup) Spawned(int) error                  { return nil }

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
	// InitPath is the binary re-executed as the helper; it must call
	// MaybeInit. Empty means this process' own binary, sealed (see
	// sealexe_linux.go).
	InitPath string
	// Adopt returns a function that waits for pid, a child this process
	// did not start with os/exec: a helper that shim/nsenter forks into a
	// pid namespace (an exec's; an init's in a joined user namespace),
	// see forkMode. It must not miss an exit that happens after it was
	// called. nil means DefaultAdopt; a process that reaps
	// its children passes one backed by its reaper, like Starter.
	Adopt func(pid int) (wait func() (int, error), err error)
	// Cgroup places each helper (init, then every exec) in the
	// container's cgroup; nil means no cgroup.
	Cgroup CgroupPlacer
	// Alongside, when set, is work on the init helper's network
	// namespace, whose path it gets (a shim attaching its network), that
	// Create runs while the helper builds the container when that is
	// safe (see alongside), else once the helper is Ready. Create returns
	// after it, and fails with its error.
	Alongside func(netns string) error
	// Seccomp compiles the spec's seccomp profile; a spec with a profile
	// needs one.
	Seccomp SeccompCompiler
}

// SeccompCompiler turns a seccomp profile into the program every process
// of the container loads: shim/seccomp's Cache, for the shim and
// tupper-run. This package does not compile profiles itself, so that the
// helper binary built from it does not link libseccomp.
type SeccompCompiler interface {
	Program(*specs.LinuxSeccomp) (*security.SeccompProgram, error)
}

// Container is a created (and possibly started) container.
type Container struct {
	ID       string
	Bundle   string
	spec     *specs.Spec
	rootfs   string
	starter  Starter
	initPath string
	cgroup   CgroupPlacer
	adopt    func(pid int) (func() (int, error), error)
	init     *Process
	lsm      security.LSM
	seccomp  *security.SeccompProgram // every process of the container loads it
}

// Create builds the container and leaves its init blocked before exec.
// On error nothing is left behind: the helper is killed and reaped, and
// its mounts lived only in its own mount namespace.
func Create(opts Options) (*Container, error) {
	c, err := newContainer(opts)
	if err != nil {
		return nil, err
	}
	plan, err := initPlan(opts.Spec)
	if err != nil {
		return nil, err
	}
	defer plan.close()
	cfg := c.initConfig(&plan, opts.NoPivotRoot)
	p, err := c.spawnInit(cfg, &plan, opts.Stdio, opts.Alongside)
	if err != nil {
		return nil, err
	}
	c.init = p
	return c, nil
}

// newContainer checks the spec and everything about it that can be
// refused before a process exists.
func newContainer(opts Options) (*Container, error) {
	spec := opts.Spec
	if spec == nil {
		return nil, invalid("no spec")
	}
	if err := validate(spec); err != nil {
		return nil, err
	}
	lsm, seccomp, err := checkSecurity(spec, opts.Seccomp)
	if err != nil {
		return nil, err
	}
	rootfs, err := rootfsPath(opts.Bundle, spec)
	if err != nil {
		return nil, err
	}
	c := &Container{
		ID: opts.ID, Bundle: opts.Bundle, spec: spec, rootfs: rootfs, lsm: lsm, seccomp: seccomp,
		starter: opts.Starter, initPath: opts.InitPath, cgroup: opts.Cgroup, adopt: opts.Adopt,
	}
	if c.starter == nil {
		c.starter = DefaultStarter
	}
	if c.initPath == "" {
		if c.initPath, err = sealedExe(); err != nil {
			return nil, err
		}
	}
	if c.cgroup == nil {
		c.cgroup = noCgroup{}
	}
	if c.adopt == nil {
		c.adopt = DefaultAdopt
	}
	return c, nil
}

// checkSecurity refuses, before any process exists, what the helper could
// not apply: a seccomp profile that does not compile, a sysctl that is not
// the container's to set, a bad personality/ioPriority/scheduler, or an
// LSM label the host cannot apply (unless the spec allows that). It
// returns the labels and the compiled seccomp profile.
func checkSecurity(spec *specs.Spec, compiler SeccompCompiler) (security.LSM, *security.SeccompProgram, error) {
	var seccomp *security.SeccompProgram
	if spec.Linux != nil && spec.Linux.Seccomp != nil {
		if compiler == nil {
			return security.LSM{}, nil, errors.New("linux.seccomp: no seccomp compiler (container.Options.Seccomp)")
		}
		var err error
		if seccomp, err = compiler.Program(spec.Linux.Seccomp); err != nil {
			return security.LSM{}, nil, invalid("%v", err)
		}
	}
	if spec.Process != nil {
		if _, err := security.ParseCapabilities(spec.Process.Capabilities); err != nil {
			return security.LSM{}, nil, invalid("%v", err)
		}
	}
	if err := security.CheckSysctls(spec); err != nil {
		return security.LSM{}, nil, invalid("%v", err)
	}
	if err := security.CheckAttrs(spec); err != nil {
		return security.LSM{}, nil, invalid("%v", err)
	}
	lsm, err := security.PlanLSM(context.Background(), spec)
	if err != nil {
		return security.LSM{}, nil, invalid("%v", err)
	}
	return lsm, seccomp, nil
}

// processConfig is what every process of the container gets: the
// program, and the container's seccomp profile, personality and LSM labels.
func (c *Container) processConfig(proc *specs.Process, lsm security.LSM) *protocol.Process {
	p := &protocol.Process{Spec: proc, ID: c.ID, LSM: lsm, Seccomp: c.seccomp}
	if l := c.spec.Linux; l != nil {
		p.Personality = l.Personality
	}
	return p
}

// initConfig is the init helper's Config for plan. Bind sources relative
// to the bundle become absolute here: the helper's working directory is
// not something to rely on. The spec goes without what the helper does
// not read, which it would only decode: the seccomp profile (its program
// is in Process) and the cgroup resources (the parent's to apply).
func (c *Container) initConfig(plan *nsPlan, noPivot bool) *protocol.Config {
	sp := *c.spec
	if sp.Linux != nil {
		linux := *sp.Linux
		linux.Seccomp, linux.Resources = nil, nil
		sp.Linux = &linux
	}
	sp.Mounts = append([]specs.Mount(nil), c.spec.Mounts...)
	for i, m := range sp.Mounts {
		if isBind(m) && m.Source != "" && !filepath.IsAbs(m.Source) {
			sp.Mounts[i].Source = filepath.Join(c.Bundle, m.Source)
		}
	}
	cfg := &protocol.Config{
		Process: c.processConfig(c.spec.Process, c.lsm),
		Init: &protocol.Init{Spec: &sp, Rootfs: c.rootfs, NoPivotRoot: noPivot,
			NewCgroupNs: plan.newCgroupNs, NewIPCNs: plan.newIPCNs},
	}
	if plan.newTimeNs {
		cfg.NewTimeNs, cfg.TimeOffsets = true, c.spec.Linux.TimeOffsets
	}
	return cfg
}

// Init returns the container's init process.
func (c *Container) Init() *Process { return c.init }

// Pid is the init process id.
func (c *Container) Pid() int { return c.init.pid }

// Spec returns the spec the container was created from.
func (c *Container) Spec() *specs.Spec { return c.spec }

// Start execs the container's program, and returns once the execve is
// done. A failure past the helper's commit point (its seccomp filter, the
// execve itself) is the process' own, as under runc: it is written to
// the process' stderr, the process exits with 255, and Start succeeds.
func (c *Container) Start() error { return c.init.start() }

// Exec runs proc inside the running container, joining all of its
// namespaces, and returns once the program has been exec'd (as Start).
func (c *Container) Exec(proc *specs.Process, stdio Stdio) (*Process, error) {
	if err := validateProcess(proc); err != nil {
		return nil, err
	}
	plan, err := c.execPlan()
	if err != nil {
		return nil, err
	}
	defer plan.close()
	lsm := c.lsm
	if proc.ApparmorProfile != "" || proc.SelinuxLabel != "" {
		// An exec may ask for its own labels; the same rules decide.
		sp := *c.spec
		sp.Process = proc
		if lsm, err = security.PlanLSM(context.Background(), &sp); err != nil {
			return nil, invalid("%v", err)
		}
	}
	cfg := &protocol.Config{Process: c.processConfig(proc, lsm)}
	p, err := c.spawnExec(cfg, &plan, stdio)
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

// KillAll sends sig to every process of the container's pid namespace.
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

package container

import (
	"errors"
	"fmt"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/shim/container/protocol"
	"golang.org/x/sys/unix"
)

// spawnInit starts the container's init helper and walks it to Ready:
// Config with the mount sources it cannot open itself, the runtime's
// hooks when it asks, and the pty master when the process has a terminal.
// along (Options.Alongside) runs beside that, or after it (alongside).
func (c *Container) spawnInit(cfg *protocol.Config, plan *nsPlan, stdio Stdio, along func(netns string) error) (*Process, error) {
	p, err := c.startHelper(cfg, plan, stdioFor(cfg, stdio))
	if err != nil {
		return nil, err
	}
	side := alongside{fn: along, pid: p.pid, alive: func() error { return p.Signal(0) }}
	if err := side.startEarly(plan, cfg.Init.Spec); err != nil {
		return nil, p.hs.fail(err)
	}
	hooksRan, err := c.initToReady(p, cfg, plan)
	if serr := side.finish(err == nil); serr != nil && err == nil {
		p.kill()
		if hooksRan {
			return nil, c.poststopAfterFailure(cfg.Init.Spec, p.pid, serr)
		}
		return nil, serr
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// initToReady walks a started init helper to Ready: mount sources,
// Config, OCI hooks (hooksRan says whether they ran). On error the helper
// is gone.
func (c *Container) initToReady(p *Process, cfg *protocol.Config, plan *nsPlan) (hooksRan bool, _ error) {
	fds, err := c.openMountSources(p.pid, cfg.Init, plan.userns())
	if err != nil {
		return false, p.hs.fail(err)
	}
	defer closeAll(fds)
	if err := p.hs.configure(cfg, fds...); err != nil {
		return false, err
	}
	hooks := func() (*specs.State, error) {
		hooksRan = true
		return c.runtimeHooks(cfg.Init.Spec, p.pid)
	}
	if p.console, err = p.hs.awaitReady(hooks, cfg.Process.Spec.Terminal); err != nil {
		if hooksRan {
			return hooksRan, c.poststopAfterFailure(cfg.Init.Spec, p.pid, err)
		}
		return false, err
	}
	return hooksRan, nil
}

// spawnExec starts an exec's helper in the container and walks it to
// Ready.
func (c *Container) spawnExec(cfg *protocol.Config, plan *nsPlan, stdio Stdio) (*Process, error) {
	p, err := c.startHelper(cfg, plan, stdioFor(cfg, stdio))
	if err != nil {
		return nil, err
	}
	if err := p.hs.configure(cfg); err != nil {
		return nil, err
	}
	if p.console, err = p.hs.awaitReady(nil, cfg.Process.Spec.Terminal); err != nil {
		return nil, err
	}
	return p, nil
}

// stdioFor is what the helper inherits as fds 0-2: nothing with a
// terminal, whose pty the helper opens inside the container.
func stdioFor(cfg *protocol.Config, stdio Stdio) *Stdio {
	if cfg.Process.Spec.Terminal {
		return nil
	}
	return &stdio
}

// runtimeHooks runs the prestart and createRuntime hooks, in the runtime's
// namespaces, once the helper has made the container's namespaces and
// mounts and before it pivots.
func (c *Container) runtimeHooks(spec *specs.Spec, pid int) (*specs.State, error) {
	state := &specs.State{Version: specs.Version, ID: c.ID, Status: specs.StateCreating, Pid: pid,
		Bundle: c.Bundle, Annotations: spec.Annotations}
	h := spec.Hooks
	if h == nil {
		return state, nil
	}
	if err := RunHooks(h.Prestart, state, c.starter); err != nil { //nolint:staticcheck // Prestart is deprecated but still part of the spec
		return nil, fmt.Errorf("prestart %w", err)
	}
	if err := RunHooks(h.CreateRuntime, state, c.starter); err != nil {
		return nil, fmt.Errorf("createRuntime %w", err)
	}
	return state, nil
}

// poststopAfterFailure runs the poststop hooks of a container whose
// creation failed after its runtime hooks ran, as runc's teardown of a
// failed create does: whatever those hooks set up on the host (a CNI
// address, firewall rules) is undone by the poststop ones. Their failures
// are added to err, which stays the cause.
func (c *Container) poststopAfterFailure(spec *specs.Spec, pid int, err error) error {
	if spec.Hooks == nil || len(spec.Hooks.Poststop) == 0 {
		return err
	}
	state := &specs.State{Version: specs.Version, ID: c.ID, Status: specs.StateStopped, Pid: pid,
		Bundle: c.Bundle, Annotations: spec.Annotations}
	for _, herr := range RunHooksWarn(spec.Hooks.Poststop, state, c.starter) {
		err = fmt.Errorf("%w (and poststop %v)", err, herr)
	}
	return err
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

// openMountSources opens, for the init helper with pid, what it mounts
// from fds rather than paths, and records them in init: idmapped bind
// mounts, made here as detached mounts (see idmap_linux.go), and, for a
// helper in a user namespace, the sources of the other bind mounts, which
// its root may not be allowed to reach (a bundle's files, a volume under a
// 0700 directory). Those are opened O_PATH, as we are allowed, through the
// helper's own root (/proc/<pid>/root), so each refers to the helper's
// mount namespace, where it can be bind-mounted from. Symlinks are
// resolved first, on our side: absolute ones would otherwise resolve
// against our root, in our mount namespace. runc likewise opens mount
// sources before the container's user namespace is entered.
func (c *Container) openMountSources(pid int, init *protocol.Init, userns bool) (fds []int, err error) {
	init.MountFds, init.TreeFds = map[int]int{}, map[int]int{}
	defer func() {
		if err != nil {
			closeAll(fds)
			fds = nil
		}
	}()
	for i, m := range init.Spec.Mounts {
		if !isBind(m) || (!userns && !isIDMapped(m)) {
			continue
		}
		if len(fds) == protocol.MaxFds {
			return fds, fmt.Errorf("more than %d bind mounts opened for the helper", protocol.MaxFds)
		}
		into, open := init.MountFds, openBindSource
		if isIDMapped(m) {
			into, open = init.TreeFds, c.openIDMapped
		}
		fd, err := open(pid, m)
		if err != nil {
			return fds, err
		}
		into[i] = len(fds)
		fds = append(fds, fd)
	}
	return fds, nil
}

// openBindSource opens m's source O_PATH in the mount namespace of the
// helper with pid.
func openBindSource(pid int, m specs.Mount) (int, error) {
	src, err := filepath.EvalSymlinks(m.Source)
	if err == nil && !filepath.IsAbs(src) {
		err = errors.New("the source must be an absolute path")
	}
	var fd int
	if err == nil {
		fd, err = unix.Open(fmt.Sprintf("/proc/%d/root%s", pid, src), unix.O_PATH|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("mount %s (bind) on %s: %w", m.Source, m.Destination, err)
	}
	return fd, nil
}

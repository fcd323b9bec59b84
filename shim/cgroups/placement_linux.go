package cgroups

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/shim/container/protocol"
)

// Placement is a container's cgroup from the first helper to the removal:
// it is the one way the shim and tupper-run put every process of a
// container into its cgroup before that process runs any of its own code,
// so that limits hold from the first instruction.
//
// With the cgroupfs driver the cgroup is made before the first helper
// starts (Join), and each helper enters it by itself: on v1 it writes "0"
// to the cgroup's tasks files while still single-threaded, on v2 it is
// cloned into the cgroup's directory. Moving another process instead
// (Spawned with Add) takes the kernel's global threadgroup lock, whose
// first taking after a quiet spell waits for an RCU grace period; see
// hack/README.md for what that costs per start. The systemd driver starts
// its scope with the first helper's pid, so there the cgroup is made in
// Spawned and helpers are moved.
//
// After Remove no helper is placed: one racing the container's deletion
// would otherwise make the cgroup again, and nothing would remove it.
type Placement struct {
	ctx     context.Context // for the log
	path    string
	systemd bool
	res     *specs.LinuxResources
	owner   int // the host uid the cgroup is delegated to, 0 for none (DelegateOwner)

	mu      sync.Mutex
	m       *Manager // nil until the first helper
	removed bool
}

// ErrRemoved refuses a helper once the container's cgroup was removed.
var ErrRemoved = fmt.Errorf("container is being deleted: %w", errdefs.ErrFailedPrecondition)

// NewPlacement checks what spec asks for against this host and returns the
// container's placement, or nil when the spec wants no cgroup (no
// cgroupsPath and no resources). It creates nothing yet. Every container
// gets runc's default device rules after its own.
func NewPlacement(ctx context.Context, id string, spec *specs.Spec, systemd bool) (*Placement, error) {
	if spec.Linux == nil || (spec.Linux.CgroupsPath == "" && spec.Linux.Resources == nil) {
		return nil, nil
	}
	p := &Placement{ctx: ctx, path: spec.Linux.CgroupsPath, systemd: systemd, res: spec.Linux.Resources,
		owner: DelegateOwner(spec)}
	if p.path == "" {
		p.path = DefaultPath(id, systemd)
	}
	if err := Check(p.res); err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	if _, err := parsePath(p.path, systemd); err != nil {
		return nil, err
	}
	return p, nil
}

// Join is called before each helper starts. With the cgroupfs driver it
// makes the cgroup (for the first helper) and returns its files; with the
// systemd driver, or a nil Placement, the zero Join.
func (p *Placement) Join() (protocol.CgroupJoin, error) {
	if p == nil || p.systemd {
		return protocol.CgroupJoin{}, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m, err := p.managerLocked(0)
	if err != nil {
		return protocol.CgroupJoin{}, err
	}
	var j protocol.CgroupJoin
	if j.TasksFiles, err = m.JoinFiles(); err != nil {
		return protocol.CgroupJoin{}, err
	}
	if j.Dir, err = m.JoinDir(); err != nil {
		j.Close()
		return protocol.CgroupJoin{}, err
	}
	return j, nil
}

// Spawned is called with each helper's pid after it started and before it
// goes on: it makes the cgroup if Join did not (systemd: a scope starting
// with pid), and moves the helper there unless it entered by itself.
func (p *Placement) Spawned(pid int) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m, err := p.managerLocked(pid)
	if err != nil || m.JoinsAtSpawn() {
		return err
	}
	if err := m.Add(pid); err != nil {
		return fmt.Errorf("move process %d into cgroup %s: %w", pid, m.Path(), err)
	}
	return nil
}

func (p *Placement) managerLocked(pid int) (*Manager, error) {
	if p.removed {
		return nil, ErrRemoved
	}
	if p.m == nil {
		m, err := New(p.ctx, p.path, WithDefaultDevices(p.res), p.systemd, pid)
		if err != nil {
			return nil, err
		}
		if err := m.Delegate(p.owner); err != nil {
			m.Delete()
			return nil, err
		}
		p.m = m
	}
	return p.m, nil
}

// Manager returns the cgroup, or nil before the first helper, after Remove
// and for a nil Placement.
func (p *Placement) Manager() *Manager {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m
}

// Remove deletes the cgroup, killing whatever is still in it, and refuses
// every later helper. Removing a Placement whose cgroup was never made,
// or a nil one, does nothing.
func (p *Placement) Remove() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	m := p.m
	p.m, p.removed = nil, true
	p.mu.Unlock()
	if m == nil {
		return nil
	}
	return m.Delete()
}

// IsRemoved reports whether err is a placement refused after Remove.
func IsRemoved(err error) bool { return errors.Is(err, ErrRemoved) }

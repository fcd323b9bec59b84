package container

import (
	"errors"
	"fmt"
	"sort"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// nsPlan is how a helper gets its namespaces (see nsjoin_linux.go for who
// can join what, and why).
type nsPlan struct {
	clone   uintptr  // new namespaces: clone flags of the helper
	parent  []nsJoin // joined on the parent's thread before the fork
	helper  []nsJoin // joined by the helper, in helperJoinOrder
	unshare uintptr  // new namespaces the constructor unshares after its joins
	fork    bool     // the constructor forks the helper into its new pid namespace
	// uidMap and gidMap are written for a new user namespace.
	uidMap, gidMap []specs.LinuxIDMapping
	// Made by the helper itself, not by clone (see protocol.Init).
	newCgroupNs, newTimeNs, newIPCNs bool
}

// initPlan plans the namespaces of a new container's init from its spec.
func initPlan(spec *specs.Spec) (nsPlan, error) {
	var plan nsPlan
	for _, ns := range spec.Linux.Namespaces {
		if ns.Path != "" {
			f, err := openNs(ns.Path, ns.Type)
			if err != nil {
				plan.close()
				return nsPlan{}, invalid("%v", err)
			}
			plan.add(nsJoin{typ: ns.Type, f: f})
			continue
		}
		switch ns.Type {
		case specs.CgroupNamespace:
			// The helper unshares it once it is in the container's
			// cgroup, which becomes the namespace's root.
			plan.newCgroupNs = true
		case specs.TimeNamespace:
			// clone(2) has no room for CLONE_NEWTIME; the helper
			// unshares it, and the program enters it at execve.
			plan.newTimeNs = true
		default:
			plan.clone |= nsFlags[ns.Type]
		}
	}
	if plan.joinsUser() {
		// The new namespaces must belong to the joined user namespace,
		// so the constructor creates them after joining it.
		plan.unshare, plan.clone = plan.clone, 0
		// unshare(CLONE_NEWPID) only moves the caller's children: the
		// constructor then forks the helper into it (see shim/nsenter).
		plan.fork = plan.unshare&unix.CLONE_NEWPID != 0
	}
	if plan.clone&unix.CLONE_NEWUSER != 0 {
		plan.uidMap, plan.gidMap = spec.Linux.UIDMappings, spec.Linux.GIDMappings
		// An ipc namespace keeps the credentials of whoever made it: its
		// mqueue filesystem's root belongs to them. Made by the helper
		// as the namespace's root, /dev/mqueue belongs to that root (as
		// under runc, whose nsexec unshares after becoming it) instead
		// of the unmapped host root.
		if plan.clone&unix.CLONE_NEWIPC != 0 {
			plan.clone &^= unix.CLONE_NEWIPC
			plan.newIPCNs = true
		}
	}
	return plan, nil
}

// execPlan plans an exec: it joins every namespace of the running init.
func (c *Container) execPlan() (nsPlan, error) {
	var plan nsPlan
	select {
	case <-c.init.done:
		return nsPlan{}, errors.New("container init has exited")
	default:
	}
	for _, ns := range c.spec.Linux.Namespaces {
		path := fmt.Sprintf("/proc/%d/ns/%s", c.init.pid, procNsName[ns.Type])
		f, err := openNs(path, ns.Type)
		if err != nil {
			plan.close()
			return nsPlan{}, err
		}
		plan.add(nsJoin{typ: ns.Type, f: f})
	}
	// The files were opened by pid. Signal 0 through init's pidfd proves
	// init was not reaped meanwhile, so they are its namespaces and not
	// those of a process that recycled the pid.
	if err := c.init.Signal(0); err != nil {
		plan.close()
		return nsPlan{}, fmt.Errorf("container init has exited: %w", err)
	}
	return plan, nil
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

// usesConstructor reports whether shim/nsenter's constructor has joins,
// unshares or a fork to do for this helper.
func (p *nsPlan) usesConstructor() bool { return needsConstructor(p.helper) || p.unshare != 0 }

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

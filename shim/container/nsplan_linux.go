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
// joins what, and why).
type nsPlan struct {
	clone   uintptr  // new namespaces: clone flags of the helper
	parent  []nsJoin // joined on the parent's thread before the fork (beside a new user namespace only)
	helper  []nsJoin // joined by the helper's constructor, in joinOrder
	unshare uintptr  // new namespaces the constructor unshares after its joins
	fork    bool     // the constructor forks the helper into its (joined or new) pid namespace
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
	}
	if plan.clone&unix.CLONE_NEWUSER != 0 {
		// Joined from inside the new user namespace, a namespace the
		// host's owns (a pod's network) would be refused: the parent's
		// thread joins those before the clone.
		plan.parent, plan.helper = partition(plan.helper, func(j nsJoin) bool { return perThread[j.typ] })
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
	plan.fork = plan.forks()
	return plan, nil
}

// partition splits joins into those keep says yes to and the rest.
func partition(joins []nsJoin, keep func(nsJoin) bool) (yes, no []nsJoin) {
	for _, j := range joins {
		if keep(j) {
			yes = append(yes, j)
		} else {
			no = append(no, j)
		}
	}
	return yes, no
}

// forks reports whether the constructor must fork the helper into its pid
// namespace: unshare(CLONE_NEWPID) and setns into a pid namespace only
// move the caller's children.
func (p *nsPlan) forks() bool {
	if p.unshare&unix.CLONE_NEWPID != 0 {
		return true
	}
	for _, j := range p.helper {
		if j.typ == specs.PIDNamespace {
			return true
		}
	}
	return false
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
	plan.fork = plan.forks()
	return plan, nil
}

func (p *nsPlan) add(j nsJoin) {
	p.helper = append(p.helper, j)
	sort.SliceStable(p.helper, func(a, b int) bool {
		return joinOrder[p.helper[a].typ] < joinOrder[p.helper[b].typ]
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

package cgroups

import "fmt"

// Move puts a running process, with all its threads, into the container's
// cgroup, making the cgroup first if no helper did: the way in for CRIU,
// which restores a container's processes as its own children and cannot
// enter the cgroup by itself as a helper does. A nil Placement moves
// nothing.
func (p *Placement) Move(pid int) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m, err := p.managerLocked(pid)
	if err != nil {
		return err
	}
	if err := m.Add(pid); err != nil {
		return fmt.Errorf("move process %d into cgroup %s: %w", pid, m.Path(), err)
	}
	return nil
}

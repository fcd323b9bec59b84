package process

import (
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/shim/container"
	"golang.org/x/sys/unix"
)

// Process is one process of a container as the shim tracks it.
// Lock it (Lock/Unlock) around a transition and the event that reports
// it, so that events leave in lifecycle order.
type Process struct {
	ID    string // exec id, "" for init
	Stdio stdio.Stdio
	Spec  *specs.Process // exec processes only
	IO    *IO

	sync.Mutex
	status   Status
	proc     *container.Process
	exitCode int
	exitedAt time.Time
	exited   chan struct{}
}

// New returns a process in the created state.
func New(id string, s stdio.Stdio, spec *specs.Process) *Process {
	return &Process{ID: id, Stdio: s, Spec: spec, exited: make(chan struct{})}
}

// Attach records the container process once it exists (at Create for
// init, at Start for an exec).
func (p *Process) Attach(cp *container.Process) { p.proc = cp }

// Container returns the container package's process, nil before Attach.
func (p *Process) Container() *container.Process { return p.proc }

// Status returns the state; the caller holds the lock.
func (p *Process) Status() Status { return p.status }

// Pid is 0 until the process exists.
func (p *Process) Pid() int {
	if p.proc == nil {
		return 0
	}
	return p.proc.Pid()
}

// SetRunning moves created -> running; the caller holds the lock.
func (p *Process) SetRunning() error {
	if err := transition(p.status, Running); err != nil {
		return err
	}
	p.status = Running
	return nil
}

// SetExited records the exit; the caller holds the lock.
func (p *Process) SetExited(code int, at time.Time) error {
	if err := transition(p.status, Stopped); err != nil {
		return err
	}
	p.status, p.exitCode, p.exitedAt = Stopped, code, at
	close(p.exited)
	return nil
}

// SetDeleted moves to deleted; the caller holds the lock.
func (p *Process) SetDeleted() error {
	if err := transition(p.status, Deleted); err != nil {
		return err
	}
	if p.status == Created {
		// Never ran: there is no exit to wait for any more.
		select {
		case <-p.exited:
		default:
			close(p.exited)
		}
	}
	p.status = Deleted
	return nil
}

// Exited is closed once the exit is recorded.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitStatus returns the code and time; valid after Exited is closed.
func (p *Process) ExitStatus() (int, time.Time) { return p.exitCode, p.exitedAt }

// Kill signals the process; the caller holds the lock.
func (p *Process) Kill(sig unix.Signal) error {
	switch {
	case p.status == Stopped || p.status == Deleted:
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	case p.proc == nil:
		return fmt.Errorf("process %q has not been started: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	if err := p.proc.Signal(sig); err != nil {
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	}
	return nil
}

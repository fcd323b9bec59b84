package process

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/shim/container"
	"golang.org/x/sys/unix"
)

// Process is one process of a container as the shim tracks it: its
// lifecycle state (state.go), its stdio and its container.Process handle.
// Every change of state happens under the process' own lock together with
// its report, a callback that queues the event for that change, so that a
// process' events leave in lifecycle order.
type Process struct {
	ID    string // exec id, "" for init
	Stdio stdio.Stdio
	Spec  *specs.Process // exec processes only

	mu       sync.Mutex
	status   Status
	handle   *container.Process // nil until the process exists
	io       *IO
	exitCode int
	exitedAt time.Time
	exited   chan struct{}
}

// Snapshot is what a process is at one moment.
type Snapshot struct {
	Status Status
	Pid    int // 0 until the process exists
	// ExitCode and ExitedAt are set once Status is Stopped (or Deleted
	// after a stop); ExitedAt is zero otherwise.
	ExitCode int
	ExitedAt time.Time
}

// New returns an exec process, registered but not started.
func New(id string, s stdio.Stdio, spec *specs.Process) *Process {
	return &Process{ID: id, Stdio: s, Spec: spec, exited: make(chan struct{})}
}

// NewInit returns a container's init, which exists (created, blocked
// before its execve) from the container's Create.
func NewInit(s stdio.Stdio, h *container.Process, io *IO) *Process {
	return &Process{Stdio: s, handle: h, io: io, exited: make(chan struct{})}
}

// Snapshot returns the process' state.
func (p *Process) Snapshot() Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.snapshotLocked()
}

func (p *Process) snapshotLocked() Snapshot {
	s := Snapshot{Status: p.status}
	if p.handle != nil {
		s.Pid = p.handle.Pid()
	}
	if p.status == Stopped || (p.status == Deleted && !p.exitedAt.IsZero()) {
		s.ExitCode, s.ExitedAt = p.exitCode, p.exitedAt
	}
	return s
}

// Handle is the container package's process, nil before the process exists.
func (p *Process) Handle() *container.Process {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.handle
}

// IO is the process' stdio, nil before the process exists.
func (p *Process) IO() *IO {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.io
}

// Exited is closed once the exit is recorded (or a never-started process
// was deleted).
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Start moves a created process to running. run starts it: an init execs
// its program (and returns nil handle and IO), an exec is spawned and
// returns its handle and IO. report runs with the pid, under the lock.
func (p *Process) Start(run func() (*container.Process, *IO, error), report func(pid int)) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := transition(p.status, Running); err != nil {
		return 0, err
	}
	h, io, err := run()
	if err != nil {
		return 0, err
	}
	if h != nil {
		p.handle, p.io = h, io
	}
	p.status = Running
	pid := p.snapshotLocked().Pid
	report(pid)
	return pid, nil
}

// Exit records the exit; report runs under the lock.
func (p *Process) Exit(code int, at time.Time, report func()) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := transition(p.status, Stopped); err != nil {
		return err
	}
	p.status, p.exitCode, p.exitedAt = Stopped, code, at
	close(p.exited)
	report()
	return nil
}

// Pause moves a running process to paused with freeze; report runs under
// the lock. Pausing a paused process does nothing.
func (p *Process) Pause(freeze func() error, report func()) error {
	return p.toggle(Running, Paused, freeze, report)
}

// Resume moves a paused process back to running with thaw.
func (p *Process) Resume(thaw func() error, report func()) error {
	return p.toggle(Paused, Running, thaw, report)
}

func (p *Process) toggle(from, to Status, do func() error, report func()) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == to {
		return nil
	}
	if p.status != from {
		return fmt.Errorf("process is %s: %w", p.status, errdefs.ErrFailedPrecondition)
	}
	if err := do(); err != nil {
		return err
	}
	p.status = to
	report()
	return nil
}

// WhileRunning runs fn while the process is running, holding its lock, so
// that fn cannot race a pause or the recording of the exit. A created,
// paused or finished process refuses.
func (p *Process) WhileRunning(fn func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != Running {
		return fmt.Errorf("process is %s, not running: %w", p.status, errdefs.ErrFailedPrecondition)
	}
	return fn()
}

// Kill signals the process. SIGKILL to a paused process also thaws it
// (thaw), since a frozen process dies only once it runs again.
func (p *Process) Kill(sig unix.Signal, thaw func() error) error {
	return p.Signal(sig, func(h *container.Process) error { return h.Signal(sig) }, thaw)
}

// Signal is Kill with another way to send sig: send gets the process'
// handle and may signal more than the process (every process of its
// container).
func (p *Process) Signal(sig unix.Signal, send func(*container.Process) error, thaw func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.status == Stopped || p.status == Deleted:
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	case p.handle == nil:
		return fmt.Errorf("process %q has not been started: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	if err := send(p.handle); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
		}
		return err
	}
	if sig == unix.SIGKILL && p.status == Paused && thaw != nil {
		if err := thaw(); err != nil {
			return fmt.Errorf("thaw the killed paused process: %w", err)
		}
		p.status = Running
	}
	return nil
}

// Delete removes a finished process, or one that never ran: a created
// process that exists (an init blocked before execve) is killed first and
// its exit recorded as any other. cleanup, given the last snapshot and the
// stdio, runs under the lock before the move to deleted. A running or
// paused process refuses.
func (p *Process) Delete(cleanup func(Snapshot, *IO) error) (Snapshot, error) {
	p.mu.Lock()
	if p.status == Created && p.handle != nil {
		p.handle.Signal(unix.SIGKILL)
		p.mu.Unlock()
		<-p.exited
		p.mu.Lock()
	}
	defer p.mu.Unlock()
	if err := transition(p.status, Deleted); err != nil {
		return Snapshot{}, err
	}
	s := p.snapshotLocked()
	if err := cleanup(s, p.io); err != nil {
		return Snapshot{}, err
	}
	if p.status == Created {
		close(p.exited) // never ran: nothing to wait for any more
	}
	p.status = Deleted
	return s, nil
}

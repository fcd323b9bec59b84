package container

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/tupper/tupper/shim/container/protocol"
	"golang.org/x/sys/unix"
)

// Process is the container's init or an exec'd process.
type Process struct {
	pid     int
	proc    *os.Process // signals go through its pidfd: no recycled pid
	console *os.File

	mu sync.Mutex // guards hs
	hs *handshake

	done    chan struct{}
	status  int
	waitErr error
	exited  time.Time
}

// newProcess tracks a started helper: wait is called once, in the
// background, and Done closes when it returns.
func newProcess(pid int, proc *os.Process, wait func() (int, error), ch *protocol.Channel) *Process {
	p := &Process{pid: pid, proc: proc, done: make(chan struct{})}
	p.hs = &handshake{ch: ch, proc: p}
	go func() {
		st, err := wait()
		p.status, p.waitErr, p.exited = st, err, time.Now()
		close(p.done)
		// Only now: Signal must not find a released handle while the
		// process still counts as running.
		proc.Release()
	}()
	return p
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

// start releases a created process: the helper execs its program.
func (p *Process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hs == nil {
		return errors.New("process already started")
	}
	err := p.hs.start()
	p.hs = nil
	return err
}

// kill ends a process that was created but will not be started: it is
// killed and reaped, and its channel and console closed.
func (p *Process) kill() {
	p.Signal(unix.SIGKILL)
	p.Wait()
	p.mu.Lock()
	if p.hs != nil {
		p.hs.ch.Close()
		p.hs = nil
	}
	p.mu.Unlock()
	if p.console != nil {
		p.console.Close()
		p.console = nil
	}
}

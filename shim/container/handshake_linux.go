package container

import (
	"errors"
	"fmt"
	"io"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/shim/container/protocol"
	"golang.org/x/sys/unix"
)

// step is where the parent is in its exchange with one helper (package
// protocol has the whole exchange). Each step follows the one before it;
// a failure at any step kills and reaps the helper, and the handshake is
// over.
type step int

const (
	stepSpawned    step = iota // running, in its cgroup, not configured
	stepConfigured             // Config sent
	stepReady                  // Ready received: built, blocked before execve
	stepStarted                // execve seen as EOF
	stepFailed
)

func (s step) String() string {
	return [...]string{"spawned", "configured", "ready", "started", "failed"}[s]
}

// handshake is the parent's side of the protocol with one helper.
type handshake struct {
	ch   *protocol.Channel
	proc *Process
	step step
	// seccomp hands a seccomp listener fd to the spec's agent (nil: the
	// profile has none).
	seccomp func(fd int) error
}

// advance moves from one step to the next, or says why it cannot.
func (h *handshake) advance(from, to step) error {
	if h.step != from {
		return fmt.Errorf("helper handshake: cannot go to %s when %s", to, h.step)
	}
	h.step = to
	return nil
}

// configure sends cfg and the fds it refers to.
func (h *handshake) configure(cfg *protocol.Config, fds ...int) error {
	if err := h.advance(stepSpawned, stepConfigured); err != nil {
		return h.fail(err)
	}
	if err := h.ch.Send(cfg, fds...); err != nil {
		return h.fail(fmt.Errorf("send config to the helper: %w", err))
	}
	return nil
}

// awaitReady waits for Ready, running hooks when the helper asks (the
// runtime's hooks; they return the state the helper hands on; nil for an
// exec, which has none), and returns the pty master that comes with Ready
// when terminal.
func (h *handshake) awaitReady(hooks func() (*specs.State, error), terminal bool) (*os.File, error) {
	if err := h.advance(stepConfigured, stepReady); err != nil {
		return nil, h.fail(err)
	}
	m, fds, err := h.ch.Recv()
	if _, ok := m.(*protocol.HooksRequest); ok && err == nil && hooks != nil {
		state, err := hooks()
		if err != nil {
			return nil, h.fail(err)
		}
		if err := h.ch.Send(&protocol.HooksDone{State: state}); err != nil {
			return nil, h.fail(err)
		}
		m, fds, err = h.ch.Recv()
	}
	if err == nil {
		if _, ok := m.(*protocol.Ready); !ok {
			closeAll(fds)
			err = unexpected(m, "ready")
		}
	}
	if err != nil {
		return nil, h.fail(err)
	}
	if !terminal {
		closeAll(fds)
		return nil, nil
	}
	if len(fds) != 1 {
		closeAll(fds)
		return nil, h.fail(errors.New("the helper sent no pty master"))
	}
	return os.NewFile(uintptr(fds[0]), "pty-master"), nil
}

// start sends Start and waits for the execve, seen as EOF. On failure
// the helper has reported why and exits; the caller reaps it.
func (h *handshake) start() error {
	if err := h.advance(stepReady, stepStarted); err != nil {
		return err
	}
	defer h.ch.Close()
	if err := h.ch.Send(&protocol.Start{}); err != nil {
		h.step = stepFailed
		return fmt.Errorf("signal start: %w", err)
	}
	m, fds, err := h.ch.Recv()
	if _, ok := m.(*protocol.Seccomp); ok && err == nil {
		if err = h.passListener(fds); err == nil {
			m, fds, err = h.ch.Recv()
		}
	}
	closeAll(fds)
	switch {
	case err == io.EOF:
		return nil
	case err == nil:
		err = unexpected(m, "EOF")
	default:
		err = fmt.Errorf("wait for exec: %w", err)
	}
	h.step = stepFailed
	return err
}

// passListener sends the seccomp listener fd that came with a Seccomp
// message to the agent, and lets the helper go on.
func (h *handshake) passListener(fds []int) error {
	defer closeAll(fds)
	if len(fds) != 1 || h.seccomp == nil {
		return fmt.Errorf("unexpected seccomp listener from the helper (%d fds)", len(fds))
	}
	if err := h.seccomp(fds[0]); err != nil {
		return err
	}
	return h.ch.Send(&protocol.SeccompOK{})
}

// fail ends the handshake: it kills and reaps the helper and returns the
// helper's own account of what went wrong when it sent one (shim/nsenter's
// constructor reports a failed join and exits before anything reads it),
// else err.
func (h *handshake) fail(err error) error {
	h.step = stepFailed
	h.proc.Signal(unix.SIGKILL)
	st, _, _ := h.proc.Wait()
	defer h.ch.Close()
	if err == io.EOF {
		err = fmt.Errorf("init helper exited before it was ready (status %d)", st)
	}
	if m, fds, rerr := h.ch.Recv(); rerr == nil {
		closeAll(fds)
		if e, ok := m.(*protocol.Error); ok {
			return helperError(e, "")
		}
	}
	return helperError(err, "")
}

// helperError turns the helper's Error message into a ValidationError
// when it refused the spec, and EOF into what eof says.
func helperError(err error, eof string) error {
	var e *protocol.Error
	switch {
	case errors.As(err, &e) && e.Invalid:
		return &ValidationError{Msg: e.Msg}
	case errors.As(err, &e):
		return errors.New(e.Msg)
	case err == io.EOF && eof != "":
		return errors.New(eof)
	}
	return err
}

func unexpected(m protocol.Message, want string) error {
	if e, ok := m.(*protocol.Error); ok {
		return e
	}
	return fmt.Errorf("unexpected %T from the helper, want %s", m, want)
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

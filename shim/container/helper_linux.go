package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/tupper/tupper/shim/container/protocol"
	"golang.org/x/sys/unix"
)

// The helper: this binary re-executed by startHelper, the Go side of
// package protocol's exchange. Init (helper_init_linux.go) and exec
// (helper_exec_linux.go) are two paths, like runc's standard and setns
// inits; both end in finish.

func init() {
	if os.Getenv(protocol.EnvInit) != "" {
		// Keep the main goroutine on the main thread for the helper's
		// whole life: per-thread state (setns, unshare(CLONE_FS), umask)
		// set up here is what execve hands to the container process.
		runtime.LockOSThread()
	}
}

// MaybeInit runs the helper and never returns when this process was
// started as one by Create or Exec; otherwise it returns at once.
func MaybeInit() {
	if os.Getenv(protocol.EnvInit) == "" {
		return
	}
	os.Exit(helperMain())
}

// helper is one helper's state: its channel and Config.
type helper struct {
	ch  *protocol.Channel
	cfg *protocol.Config
}

// errParentGone ends a helper whose parent closed the channel: it gave up
// on us (Create failed elsewhere), or this is a helper started only for
// its user namespace (idmap_linux.go).
var errParentGone = errors.New("the parent closed the channel")

// errExec marks a failure at or after the point of no return, execve.
type errExec struct{ error }

func helperMain() int {
	h := &helper{ch: protocol.HelperChannel()}
	cfg, fds, err := protocol.Expect[*protocol.Config](h.ch)
	if err != nil {
		return 1
	}
	h.cfg = cfg
	if cfg.Init != nil {
		err = h.runInit(fds)
	} else {
		closeAll(fds)
		err = h.runExec()
	}
	// Both paths return only on failure.
	return h.report(err)
}

// report tells the parent why the helper failed and returns its exit
// status.
func (h *helper) report(err error) int {
	if errors.Is(err, errParentGone) {
		return 1
	}
	msg := &protocol.Error{Msg: err.Error()}
	var v *ValidationError
	if errors.As(err, &v) {
		msg = &protocol.Error{Msg: v.Msg, Invalid: true}
	}
	h.ch.Send(msg)
	var ee errExec
	if errors.As(err, &ee) {
		return 127
	}
	return 1
}

// enter checks that the helper is where its constructor put it (cgroup,
// namespaces) and joins what the constructor did not need to.
func (h *helper) enter() error {
	if err := checkCgroupJoined(h.cfg.CgroupFds); err != nil {
		return err
	}
	unix.Umask(0)
	for _, fd := range h.cfg.NsFds {
		unix.CloseOnExec(fd)
	}
	return nil
}

// finish resolves the process inside the container, reports Ready (with
// the pty master for a terminal), waits for Start and execs. beforeExec,
// if set, runs after Start (the init's startContainer hooks). It returns
// only on failure.
func (h *helper) finish(create bool, beforeExec func() error) error {
	p, err := prepareProcess(h.cfg.Process, create)
	if err != nil {
		return err
	}
	var fds []int
	if h.cfg.Process.Spec.Terminal {
		master, err := setupTerminal(p)
		if err != nil {
			return err
		}
		fds = append(fds, master)
	}
	err = h.ch.Send(&protocol.Ready{}, fds...)
	closeAll(fds)
	if err != nil {
		return errParentGone
	}
	if _, _, err := protocol.Expect[*protocol.Start](h.ch); err != nil {
		if err == io.EOF {
			return errParentGone
		}
		return fmt.Errorf("helper: expected start: %w", err)
	}
	if beforeExec != nil {
		if err := beforeExec(); err != nil {
			return err
		}
	}
	return errExec{p.exec()}
}

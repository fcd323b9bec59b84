package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/shim/container/protocol"
	"github.com/tupper/tupper/version"
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

// helperEnv marks a helper and says which build started it: a helper
// binary from another build (sealexe_linux.go) refuses to go on.
var helperEnv = protocol.EnvInit + "=" + version.Version

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

// errExec marks a failure after Start, reported to the parent.
type errExec struct{ error }

// errStarted marks a failure past the helper's commit point (see
// protocol): the process' own, as under runc.
type errStarted struct{ error }

func helperMain() int {
	h := &helper{ch: protocol.HelperChannel()}
	cfg, fds, err := protocol.Expect[*protocol.Config](h.ch)
	if err != nil {
		return 1
	}
	h.cfg = cfg
	if v := os.Getenv(protocol.EnvInit); v != version.Version {
		closeAll(fds)
		return h.report(fmt.Errorf("the helper binary is version %q and the shim %q: install %s from the shim's build", version.Version, v, HelperName))
	}
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
	var started errStarted
	if errors.As(err, &started) {
		// runc's init writes the same line, and exits with 255.
		fmt.Fprintln(os.Stderr, started.error)
		return 255
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
	return joinSessionKeyring(h.cfg)
}

// joinSessionKeyring leaves the caller's session keyring, whose keys the
// container could otherwise read (keyrings are not namespaced), for one of
// the container's own, named for it so that its execs join the same one,
// as runc does. The init makes it searchable by the container's user
// (others in a user namespace, where that user is not the keyring's
// owner as the kernel sees it).
func joinSessionKeyring(cfg *protocol.Config) error {
	serial, err := unix.KeyctlJoinSessionKeyring("_ses." + cfg.Process.ID)
	if errors.Is(err, unix.ENOSYS) {
		return nil // a kernel without keyrings has none to leak
	}
	if err != nil {
		return fmt.Errorf("join a session keyring of the container's own: %w", err)
	}
	if cfg.Init == nil {
		return nil
	}
	search := uint32(0x80000) // KEY_USR_SEARCH
	for _, ns := range cfg.Init.Spec.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			search = 0x8 // KEY_OTH_SEARCH
		}
	}
	desc, err := unix.KeyctlString(unix.KEYCTL_DESCRIBE, serial)
	if err != nil {
		return fmt.Errorf("describe the container's session keyring: %w", err)
	}
	// type;uid;gid;perm;description
	f := strings.SplitN(desc, ";", 5)
	perm, err := strconv.ParseUint(f[min(3, len(f)-1)], 16, 32)
	if err != nil || len(f) < 5 {
		return fmt.Errorf("session keyring description %q: %v", desc, err)
	}
	if err := unix.KeyctlSetperm(serial, uint32(perm)|search); err != nil {
		return fmt.Errorf("set the container's session keyring permissions: %w", err)
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
	// Past the commit, failures are the process' own (see protocol).
	committed := false
	commit := func() { committed = true }
	err = p.exec(h.seccompListener, commit)
	if committed {
		return errStarted{err}
	}
	return errExec{err}
}

// seccompListener hands the listener fd of a notifying seccomp profile to
// the parent, which sends it on to the agent, and waits until it has.
func (h *helper) seccompListener(fd int) error {
	if err := h.ch.Send(&protocol.Seccomp{}, fd); err != nil {
		return fmt.Errorf("send the seccomp listener fd: %w", err)
	}
	if _, _, err := protocol.Expect[*protocol.SeccompOK](h.ch); err != nil {
		return fmt.Errorf("seccomp listener: %w", err)
	}
	return nil
}

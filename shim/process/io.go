package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/fifo"
	"github.com/tupper/tupper/shim/container"
)

// Starter starts helper binaries (binary:// loggers) so that the shim's
// reaper, not os/exec, waits for them.
type Starter func(cmd *exec.Cmd) (wait func() (int, error), err error)

// IO connects a process' stdio to containerd's endpoints.
//
// Without a terminal, each stream goes through a pipe that the shim
// copies to the FIFO (so containerd sees EOF when the shim says so, not
// when the last background child lets go); file:// targets are given to
// the process directly; binary:// targets are pipes read by the logging
// binary. With a terminal, the pty master is copied to the stdout target.
type IO struct {
	stdio stdio.Stdio

	child   container.Stdio // ends handed to the process, closed after spawn
	stdinW  io.WriteCloser  // our end of the process' stdin
	stdinR  io.ReadCloser   // the stdin FIFO
	outSink io.WriteCloser  // where terminal output goes
	console console.Console
	master  *os.File

	copies    sync.WaitGroup
	closeOnce sync.Once
	resizeMu  sync.Mutex // orders Resize with Close's closing of master
	closed    bool
	stdinOnce sync.Once
	closers   []io.Closer
	logger    *exec.Cmd
}

// NewIO opens the endpoints described by s. id and ns are passed to
// logging binaries.
func NewIO(ctx context.Context, id, ns string, s stdio.Stdio, start Starter) (_ *IO, retErr error) {
	i := &IO{stdio: s}
	defer func() {
		if retErr != nil {
			i.CloseChildEnds()
			i.Close()
		}
	}()
	if s.Stdin != "" {
		// O_NONBLOCK so that Create does not wait for the client to open
		// its end; the fifo package still blocks reads until it does.
		f, err := fifo.OpenFifo(context.Background(), s.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open stdin %s: %w", s.Stdin, err)
		}
		i.stdinR = f
		i.closers = append(i.closers, f)
		if !s.Terminal {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			i.child.Stdin, i.stdinW = r, w
			i.closers = append(i.closers, w)
			go func() {
				io.Copy(w, f)
				i.CloseStdin()
			}()
		}
	}
	if s.Stdout == "" && s.Stderr == "" {
		return i, nil
	}
	uri, err := parseURI(s.Stdout)
	if err != nil {
		return nil, err
	}
	switch uri.Scheme {
	case "file":
		if err := i.openFile(uri); err != nil {
			return nil, err
		}
	case "binary", "binary-v2":
		if err := i.startLogger(ctx, id, ns, uri, start); err != nil {
			return nil, err
		}
	default:
		if err := i.openFifos(ctx); err != nil {
			return nil, err
		}
	}
	return i, nil
}

func parseURI(s string) (*url.URL, error) {
	if s == "" || filepath.IsAbs(s) {
		return &url.URL{Scheme: "fifo", Path: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("bad stdio URI %q: %w", s, err)
	}
	if u.Scheme == "" {
		u.Scheme = "fifo"
	}
	return u, nil
}

// fifoOpenWait bounds how long Create waits for the client to open its end
// of an output FIFO before going on without it.
var fifoOpenWait = 10 * time.Second

// openFifos pipes stdout and stderr to their FIFOs. With a terminal there
// is only the pty's output, which goes to stdout: stderr is never opened,
// as runc's shim never does, since clients (containerd's cio with a
// terminal: ctr, nerdctl `run -t`, `exec -t`) name a stderr FIFO that
// they do not make.
func (i *IO) openFifos(ctx context.Context) error {
	for _, t := range []struct {
		path  string
		child **os.File
	}{{i.stdio.Stdout, &i.child.Stdout}, {i.stdio.Stderr, &i.child.Stderr}} {
		if t.path == "" || (i.stdio.Terminal && t.child == &i.child.Stderr) {
			continue
		}
		f, err := openOutputFifo(ctx, t.path)
		if err != nil {
			return fmt.Errorf("open %s: %w", t.path, err)
		}
		if i.stdio.Terminal {
			i.outSink = f
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			f.Close()
			return err
		}
		*t.child = w
		i.copyOut(f, r)
	}
	return nil
}

func (i *IO) copyOut(dst io.WriteCloser, src io.ReadCloser) {
	i.copies.Add(1)
	// Closing dst too ends a copy that waits for a client that never
	// came (see fifoWriter).
	i.closers = append(i.closers, src, dst)
	go func() {
		defer i.copies.Done()
		io.Copy(dst, src)
		src.Close()
		dst.Close()
	}()
}

func (i *IO) openFile(u *url.URL) error {
	if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(u.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	if i.stdio.Terminal {
		i.outSink = f
		return nil
	}
	dup, err := dupFile(f)
	if err != nil {
		f.Close()
		return err
	}
	i.child.Stdout, i.child.Stderr = f, dup
	return nil
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// startLogger runs a binary:// logging driver: it gets the read ends of
// the stdout and stderr pipes as fds 3 and 4 and signals readiness by
// closing (binary) or writing to and closing (binary-v2) fd 5.
func (i *IO) startLogger(ctx context.Context, id, ns string, u *url.URL, start Starter) error {
	q := u.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var args []string
	for _, k := range keys {
		args = append(args, k)
		if v := q[k]; len(v) > 0 && v[0] != "" {
			args = append(args, v[0])
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	cmd := exec.Command(u.Path, args...)
	cmd.Env = []string{"CONTAINER_ID=" + id, "CONTAINER_NAMESPACE=" + ns}
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	wait, err := start(cmd)
	outR.Close()
	errR.Close()
	readyW.Close()
	if err != nil {
		outW.Close()
		errW.Close()
		return fmt.Errorf("start logging binary %s: %w", u.Path, err)
	}
	go func() { wait(); cmd.Process.Release() }()
	i.logger = cmd
	b := make([]byte, 1)
	n, _ := readyR.Read(b)
	if u.Scheme == "binary-v2" && n == 0 {
		cmd.Process.Kill()
		outW.Close()
		errW.Close()
		return errors.New("logging binary exited before it was ready")
	}
	if i.stdio.Terminal {
		i.outSink = outW
		errW.Close()
		return nil
	}
	i.child.Stdout, i.child.Stderr = outW, errW
	return nil
}

// Chown gives the pipes among the process' stdio to uid:gid, as runc's
// shim does with the IoUid/IoGid options: a process reopening one
// (/dev/stdout is /proc/self/fd/1) is checked against the pipe's owner and
// mode 0600, which a user namespace's root, a mapped id, would fail.
// Files (file:// logs) keep their owner.
func (i *IO) Chown(uid, gid int) error {
	for _, f := range []*os.File{i.child.Stdin, i.child.Stdout, i.child.Stderr} {
		if f == nil {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			return err
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
			continue
		}
		if err := syscall.Fchown(int(f.Fd()), uid, gid); err != nil {
			return fmt.Errorf("give stdio to %d:%d: %w", uid, gid, err)
		}
	}
	return nil
}

// ChildStdio returns the files the process gets as fds 0-2.
func (i *IO) ChildStdio() container.Stdio { return i.child }

// CloseChildEnds closes the shim's copies of the process' ends once the
// process has them, so EOF propagates when the process closes them.
func (i *IO) CloseChildEnds() {
	for _, f := range []*os.File{i.child.Stdin, i.child.Stdout, i.child.Stderr} {
		if f != nil {
			f.Close()
		}
	}
	i.child = container.Stdio{}
}

// AttachConsole starts copying between the pty master and the stdio
// endpoints.
func (i *IO) AttachConsole(master *os.File) error {
	c, err := console.ConsoleFromFile(master)
	if err != nil {
		return err
	}
	i.console, i.master = c, master
	if i.stdinR != nil {
		go func() {
			io.Copy(master, i.stdinR)
		}()
	}
	if i.outSink != nil {
		// The copy closes master when the terminal hangs up (the process
		// exited); Resize must know, as after Close.
		i.copyOut(i.outSink, struct {
			io.Reader
			io.Closer
		}{master, closerFunc(func() error {
			i.resizeMu.Lock()
			defer i.resizeMu.Unlock()
			i.closed = true
			return master.Close()
		})})
		i.outSink = nil
	}
	return nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// Resize sets the pty window size. Like runc's shim, it ignores a resize
// for a process without a terminal, or whose terminal is already closed
// (the process exited): clients resize right after Start and on every
// SIGWINCH, racing a short-lived process' exit (nerdctl run -t printed
// "resize pty: bad file descriptor").
func (i *IO) Resize(width, height uint32) error {
	i.resizeMu.Lock()
	defer i.resizeMu.Unlock()
	if i.console == nil || i.closed {
		return nil
	}
	return i.console.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

// CloseStdin closes the process' stdin (CloseIO).
func (i *IO) CloseStdin() error {
	i.stdinOnce.Do(func() {
		if i.stdinW != nil {
			i.stdinW.Close()
		}
		if i.stdinR != nil {
			i.stdinR.Close()
		}
	})
	return nil
}

// Wait waits up to timeout for the output copies to drain; a process'
// background children may keep its pipes open forever.
func (i *IO) Wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { i.copies.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Close releases everything; output not yet copied is dropped.
func (i *IO) Close() error {
	i.closeOnce.Do(func() {
		i.CloseStdin()
		i.resizeMu.Lock()
		i.closed = true
		if i.master != nil {
			i.master.Close()
		}
		i.resizeMu.Unlock()
		if i.outSink != nil {
			i.outSink.Close()
		}
		for _, c := range i.closers {
			c.Close()
		}
	})
	return nil
}

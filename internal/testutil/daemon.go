package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Daemon is a process a test started and stops by PID: its output goes to a
// log file, it has a process group of its own (a terminal's ^C reaches only
// the test), and it is killed if the test binary dies before its cleanup.
type Daemon struct {
	Name string
	Bin  string
	Args []string
	Log  string
	Cmd  *exec.Cmd

	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

// StartDaemon starts bin with args and env, its output appended to logPath.
func StartDaemon(t testing.TB, name, logPath string, env []string, bin string, args ...string) *Daemon {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	d := &Daemon{Name: name, Bin: bin, Args: args, Log: logPath, Cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig follows the thread that forked, not the process: this
		// one stays, locked, until the daemon has exited, so the daemon
		// dies with the test binary and not with a retired thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			d.err = cmd.Wait()
		}
		lf.Close()
		close(d.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Logf("started %s, pid %d: %s %s", name, cmd.Process.Pid, bin, strings.Join(args, " "))
	return d
}

// Done is closed when the daemon has exited.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err is how the daemon exited, once Done is closed.
func (d *Daemon) Err() error { return d.err }

// Stop ends the daemon: SIGTERM, then SIGKILL after timeout.
func (d *Daemon) Stop(t testing.TB, timeout time.Duration) {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return
	case <-time.After(timeout):
	}
	t.Logf("%s (pid %d) ignored SIGTERM for %s; SIGKILL", d.Name, d.Cmd.Process.Pid, timeout)
	_ = d.Cmd.Process.Kill()
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) survived SIGKILL", d.Name, d.Cmd.Process.Pid)
	}
}

// Tail returns the last n lines of the daemon's log.
func (d *Daemon) Tail(n int) string {
	b, err := os.ReadFile(d.Log)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ctrTimeout bounds one ctr call: a hung daemon fails the test instead of
// hanging it until go test's own timeout.
const ctrTimeout = 3 * time.Minute

// CtrError is a failed ctr call.
type CtrError struct {
	Args           []string
	Code           int // ctr's exit status; -1 if it did not exit (timeout, not found)
	Stdout, Stderr string
	Err            error
}

func (e *CtrError) Error() string {
	return fmt.Sprintf("ctr %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(e.Args, " "), e.Err, e.Stdout, e.Stderr)
}

func (e *CtrError) Unwrap() error { return e.Err }

// ExitCode is ctr's exit status in err: 0 for nil, -1 when ctr did not
// exit on its own.
func ExitCode(err error) int {
	var ce *CtrError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ce):
		return ce.Code
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// CtrArgs is the argument list that addresses this Env's containerd and
// namespace, for commands the caller runs itself (under script(1), or in
// the background).
func (e *Env) CtrArgs(args ...string) []string { return e.ctrArgs(e.Namespace, args) }

func (e *Env) ctrArgs(namespace string, args []string) []string {
	return append([]string{"--address", e.Address, "--namespace", namespace}, args...)
}

// CtrCommand is ctr with args as an *exec.Cmd, for the caller to run.
func (e *Env) CtrCommand(ctx context.Context, args ...string) *exec.Cmd {
	return e.ctrCommand(ctx, e.Namespace, args)
}

func (e *Env) ctrCommand(ctx context.Context, namespace string, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ctr", e.ctrArgs(namespace, args)...)
	cmd.Env = e.daemonEnv()
	return cmd
}

// Ctr runs ctr against this Env and returns its standard output (a
// container's, for ctr run and task exec). Standard error, where ctr puts
// its own messages and a container its errors, is in the *CtrError.
func (e *Env) Ctr(args ...string) (string, error) {
	return e.CtrIn(e.Namespace, args...)
}

// CtrIn is Ctr in another containerd namespace, for a test that keeps
// apart what it does in several. It names them Namespace+"-"+suffix:
// cleanup removes the containers and cgroups of every namespace so named.
func (e *Env) CtrIn(namespace string, args ...string) (string, error) {
	stdout, _, err := e.ctr(namespace, args)
	return stdout, err
}

// CtrCombined is Ctr with standard error appended to the output, without
// containerd's cgroup v1 deprecation warnings: for checks of the message a
// refused container gets.
func (e *Env) CtrCombined(args ...string) (string, error) {
	stdout, stderr, err := e.ctr(e.Namespace, args)
	return stdout + stderr, err
}

// MustCtr is Ctr that fails t on error.
func (e *Env) MustCtr(t testing.TB, args ...string) string {
	t.Helper()
	out, err := e.Ctr(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *Env) ctr(namespace string, args []string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	defer cancel()
	cmd := e.ctrCommand(ctx, namespace, args)
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	runErr := cmd.Run()
	stdout, stderr = o.String(), withoutDeprecations(s.String())
	if runErr != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(runErr, &ee) && ctx.Err() == nil {
			code = ee.ExitCode()
		}
		return stdout, stderr, &CtrError{Args: args, Code: code, Stdout: stdout, Stderr: stderr, Err: runErr}
	}
	return stdout, stderr, nil
}

// withoutDeprecations drops the lines of containerd's deprecation
// warnings (cgroup v1), which ctr prints on every call on such a host.
func withoutDeprecations(s string) string {
	if !strings.Contains(s, "DEPRECATION") {
		return s
	}
	var keep []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(l, "DEPRECATION") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// Package shim runs containerd-shim-tupper-v2 under a real containerd
// v2.4 with ctr, on containerd's default overlayfs snapshotter (the
// tupper snapshotter's own suite is in integration/), through
// internal/harness.
//
// Needs root, containerd, ctr and a built shim (make build; TUPPER_SHIM
// names another).
package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/harness"
	"github.com/tupper/tupper/internal/testutil"
)

// image is busybox with /escape, a symlink out of any rootfs.
var image = harness.ImageName("escape")

// env is a private containerd (internal/harness) seen from one test or
// subtest: t is where its failing calls report.
type env struct {
	*harness.Env
	t     *testing.T
	slice string // systemd cgroup driver only (driver_test.go)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	systemd := harness.SystemdCgroupDriver(t)
	e := &env{Env: harness.Start(t, harness.Options{SystemdCgroup: systemd}), t: t}
	if systemd {
		e.slice = sliceName(time.Now().UnixNano())
		// Registered after the harness' cleanup, so it runs first:
		// what a test left in the slice goes with it.
		t.Cleanup(func() { e.For(t).stopSlice() })
	}
	e.ImportImage(t, "escape")
	return e
}

// For is this env as seen from subtest t.
func (e *env) For(t *testing.T) *env { return &env{Env: e.Env, t: t, slice: e.slice} }

// ctr runs ctr and returns its output, standard error included.
func (e *env) ctr(args ...string) (string, error) {
	return e.CtrCombined(e.withRuntimeConfig(e.withCgroupsPath(args))...)
}

func (e *env) mustCtr(args ...string) string {
	e.t.Helper()
	out, err := e.ctr(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// withRuntimeConfig gives a tupper `ctr run` this env's runtime options
// (its own bridge, subnet and address pool) unless it names a config.
func (e *env) withRuntimeConfig(args []string) []string {
	if len(args) > 0 && args[0] == "run" && slices.Contains(args, harness.TupperRuntimeType) &&
		!slices.Contains(args, "--config") && !slices.Contains(args, "--runtime-config-path") {
		return append([]string{"run", "--runtime-config-path", e.RuntimeConfig}, args[1:]...)
	}
	return args
}

// ctrLine is a ctr command line for a shell (underPty).
func (e *env) ctrLine(args ...string) string {
	return strings.Join(append([]string{"ctr"}, e.CtrArgs(e.withRuntimeConfig(e.withCgroupsPath(args))...)...), " ")
}

// run is `ctr run --rm` with the tupper runtime; it returns the output
// and ctr's exit code.
func (e *env) run(id string, extra []string, args ...string) (string, int) {
	e.t.Helper()
	a := append([]string{"run", "--rm", "--runtime", harness.TupperRuntimeType}, extra...)
	a = append(append(a, image, id), args...)
	out, err := e.ctr(a...)
	return out, exitCode(e.t, err)
}

// exitCode is ctr's exit status; a ctr that did not exit fails the test.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	code := harness.ExitCode(err)
	if code < 0 {
		t.Fatal(err)
	}
	return code
}

// task is one row of `ctr task ls`: ok is false when the task is not listed.
func (e *env) task(id string) (pid int, status string, ok bool) {
	e.t.Helper()
	for _, l := range strings.Split(e.mustCtr("task", "ls"), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == id {
			pid, _ = strconv.Atoi(f[1])
			return pid, f[2], true
		}
	}
	return 0, "", false
}

// mustTask is task for a task that must be listed.
func (e *env) mustTask(id string) (pid int, status string) {
	e.t.Helper()
	pid, status, ok := e.task(id)
	if !ok {
		e.t.Fatalf("task %s not listed", id)
	}
	return pid, status
}

func (e *env) taskPid(id string) int {
	e.t.Helper()
	pid, _ := e.mustTask(id)
	return pid
}

func (e *env) taskStatus(id string) string {
	e.t.Helper()
	_, st := e.mustTask(id)
	return st
}

func (e *env) waitStopped(id string) {
	e.t.Helper()
	waitFor(e.t, func() bool { _, st, _ := e.task(id); return st == "STOPPED" }, "task "+id+" to stop")
}

// kill kills a container's task with SIGKILL and deletes task and container.
func (e *env) kill(ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		e.mustCtr("task", "kill", "-s", "KILL", id)
	}
	for _, id := range ids {
		e.waitStopped(id)
		e.mustCtr("task", "delete", id)
		e.mustCtr("containers", "rm", id)
	}
}

// newShim is the shim that runs now and did not before (a list from
// ShimPids); the test fails without one.
func (e *env) newShim(before []int) int {
	e.t.Helper()
	for _, p := range e.ShimPids() {
		if !slices.Contains(before, p) {
			return p
		}
	}
	e.t.Fatal("no shim found")
	return 0
}

// stateMounts lists the mounts below containerd's state dir (rootfs).
func (e *env) stateMounts() []string {
	ms, err := testutil.MountsUnder(filepath.Join(e.Dir, "containerd", "state"))
	if err != nil {
		e.t.Fatal(err)
	}
	return ms
}

// shimSocket is the socket file of the shim serving container id, from
// the bootstrap result containerd keeps in the container's bundle.
func (e *env) shimSocket(id string) string {
	b, err := os.ReadFile(filepath.Join(e.Dir, "containerd", "state", "io.containerd.runtime.v2.task", e.Namespace, id, "bootstrap.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var boot struct{ Address string }
	if err := json.Unmarshal(b, &boot); err != nil || !strings.HasPrefix(boot.Address, "unix://") {
		e.t.Fatalf("bootstrap.json %s: %v", b, err)
	}
	return strings.TrimPrefix(boot.Address, "unix://")
}

// underPty runs a shell command line under script(1), which gives ctr a
// pseudo-terminal. With stdin, it writes stdin once task readyID runs,
// and keeps it open until the command has exited: an EOF would reach the
// container's terminal and end its shell early.
func (e *env) underPty(cmdline, stdin, readyID string) (string, error) {
	e.t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		testutil.Require(e.t, "needs script(1) (util-linux)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-qec", cmdline, "/dev/null")
	cmd.Env = append(os.Environ(), "PATH="+e.BinDir+":"+os.Getenv("PATH"))
	// An *os.File stdin: os/exec then copies nothing and Wait does not
	// wait for our writer.
	pr, pw, err := os.Pipe()
	if err != nil {
		e.t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pr, &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	if stdin != "" {
		waitFor(e.t, func() bool { _, st, _ := e.task(readyID); return st == "RUNNING" }, "task "+readyID+" to run")
		if _, err := pw.WriteString(stdin); err != nil {
			e.t.Fatal(err)
		}
	}
	err = cmd.Wait()
	return strings.ReplaceAll(out.String(), "\r", ""), err
}

// waitFor is eventually, failing the test on timeout.
func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	if !eventually(ok) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// eventually polls ok every 100 ms for up to 10 s.
func eventually(ok func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// allocations lists the addresses tupper's IPAM has handed out on this
// env's bridge.
func (e *env) allocations() []string { return e.allocationsOn(e.Bridge) }

// allocationsOn lists the addresses tupper's IPAM has handed out on bridge.
func (e *env) allocationsOn(bridge string) []string {
	entries, _ := os.ReadDir(filepath.Join(e.IPAMDir(), bridge, "ipv4"))
	var out []string
	for _, en := range entries {
		if strings.Count(en.Name(), ".") == 3 {
			out = append(out, en.Name())
		}
	}
	return out
}

// veths lists the links enslaved to this env's bridge.
func (e *env) veths() []string { return vethsOn(e.Bridge) }

// vethsOn lists the links enslaved to bridge.
func vethsOn(bridge string) []string {
	out, _ := exec.Command("ip", "-o", "link", "show", "master", bridge).Output()
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.Split(strings.TrimSuffix(f[1], ":"), "@")[0])
		}
	}
	return names
}

// haveRunc requires runc and its shim, for the differential tests.
func haveRunc(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			testutil.Require(t, "needs "+bin+" (make deps)")
		}
	}
}

// subtest is one scenario of a suite that shares one env.
type subtest struct {
	name string
	fn   func(t *testing.T, e *env)
}

// runSubtests runs each scenario as a subtest with its own view of e.
func runSubtests(t *testing.T, e *env, tests []subtest) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, e.For(t)) })
	}
}

// removeAtEnd force-deletes a container when subtest t ends, also when it
// fails half-way, so that the next subtest starts from a clean env.
func (e *env) removeAtEnd(t *testing.T, id string) {
	t.Cleanup(func() {
		if _, err := e.ctr("task", "delete", "-f", id); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Errorf("deleting task %s: %v", id, err)
		}
		if _, err := e.ctr("containers", "rm", id); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Errorf("removing container %s: %v", id, err)
		}
	})
}

// Package harness starts a private containerd for tupper's integration
// tests, and for tools that want one: its own directory, sockets and
// namespace; containerd's overlayfs, containerd's built-in btrfs or the
// tupper snapshotter on a loopback btrfs of its own; tupper's runtime on a
// bridge and subnet of its own; optionally all of it in a network
// namespace of its own. Everything it starts is stopped by PID and
// everything it mounts undone when the test that called Start ends.
//
// The Env keeps the testing.T that made it, for its cleanup only; methods
// that can fail take the caller's T (a subtest's), so that a failure is
// reported where it happened and never on a test that has already ended.
package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/testutil"
)

// Snapshotters Start knows.
const (
	Overlayfs = "overlayfs" // containerd's own, on the host's filesystem
	Tupper    = "tupper"    // tupper's daemon on a loopback btrfs
	Btrfs     = "btrfs"     // containerd's built-in one, on a loopback btrfs
)

// TupperRuntimeType is the runtime name of tupper's shim.
const TupperRuntimeType = "io.containerd.tupper.v2"

// Options choose what Start sets up. The zero value is a containerd on
// overlayfs, without CRI, with tupper's runtime on cgroupfs.
type Options struct {
	// Snapshotter is Overlayfs (default), Tupper or Btrfs. The
	// environment variable TUPPER_TEST_SNAPSHOTTER=btrfs turns Tupper into
	// Btrfs: a check of the tests themselves against containerd's own.
	Snapshotter string
	// CRI keeps containerd's CRI plugins, with a runtime handler "tupper".
	CRI bool
	// SystemdCgroup has tupper's runtime place containers with the systemd
	// cgroup driver instead of cgroupfs.
	SystemdCgroup bool
	// RuntimeOptions are more lines for tupper's runtime options (TOML;
	// keys as in shim/options), after the network ones Start writes.
	RuntimeOptions string
	// ExtraConfig is appended to containerd's config.
	ExtraConfig string
	// BtrfsSize is the loopback btrfs's size (default 1 GiB).
	BtrfsSize int64
	// Netns runs containerd, and so the shims, the OCI hooks and the CNI
	// plugins they run, in a network namespace the Env makes and removes:
	// for tests that set up networks with tools (nerdctl's CNI bridge, its
	// iptables rules, the ip_forward its bridge plugin turns on) that
	// would otherwise change the host's. Command runs programs there.
	Netns bool
}

// Env is one private containerd (and tupper snapshotter), torn down when
// the test that started it ends.
type Env struct {
	// Dir holds everything: configs, logs, sockets, containerd's root and
	// state, the loopback btrfs's mount point. It is removed at the end,
	// unless the test failed and TUPPER_TEST_KEEP=1.
	Dir string
	// Address is containerd's gRPC socket, Namespace the containerd
	// namespace the ctr wrapper uses (unique per Env).
	Address, Namespace string
	// Snapshotter is the name to give ctr's --snapshotter; SnapshotterRoot
	// its root directory (empty for overlayfs).
	Snapshotter, SnapshotterRoot string
	// BinDir is first on containerd's PATH; Shim is the copy of tupper's
	// shim in it, so that this Env's shims are the processes running it.
	BinDir, Shim string
	// Bridge, Subnet and RuntimeConfig are tupper's runtime network:
	// RuntimeConfig is the options file TupperRuntime passes to ctr.
	Bridge, Subnet, RuntimeConfig string
	// Path, when set, is the PATH of daemons started from then on (a
	// test that hides a tool from the runtime), instead of BinDir's.
	Path string
	// Netns is the bind mount of the Env's network namespace
	// (Options.Netns); empty when containerd runs in the host's.
	Netns string

	owner      testing.TB // the test that called Start: cleanup reports here
	opts       Options
	repo       string
	snapSock   string
	undoBtrfs  func() error
	containerd *testutil.Daemon
	snapshot   *testutil.Daemon
	daemons    []*testutil.Daemon // every one ever started, for the logs
}

// Start sets up a private containerd as o says; t.Cleanup undoes it.
func Start(t *testing.T, o Options) *Env {
	t.Helper()
	if o.Snapshotter == "" {
		o.Snapshotter = Overlayfs
	}
	if o.Snapshotter == Tupper && os.Getenv(EnvSnapshotter) == Btrfs {
		o.Snapshotter = Btrfs
	}
	requireMachine(t, o)
	repo := RepoRoot(t)
	dir, err := os.MkdirTemp("", "tupper-it-")
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Dir: dir, owner: t, opts: o, repo: repo, Snapshotter: o.Snapshotter,
		Namespace: "tupper-it-" + strings.TrimPrefix(filepath.Base(dir), "tupper-it-"),
		Address:   filepath.Join(dir, "containerd.sock"), BinDir: filepath.Join(dir, "bin")}
	t.Cleanup(e.cleanup)
	// Like containerd's own state dirs: traversable by the mapped root of
	// a user-namespaced container, which must reach its rootfs below here.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "xdg"), 0o700); err != nil { // daemonEnv
		t.Fatal(err)
	}
	t.Logf("harness: %s, snapshotter %s, namespace %s", dir, e.Snapshotter, e.Namespace)
	e.installShims(t)
	e.writeRuntimeConfig(t)
	if o.Snapshotter != Overlayfs {
		e.mountBtrfs(t)
	}
	if o.Snapshotter == Tupper {
		e.startSnapshotter(t)
	}
	if o.Netns {
		e.makeNetns(t)
	}
	e.writeContainerdConfig(t)
	e.StartContainerd(t)
	return e
}

// mountBtrfs puts the snapshotter's root on a loopback btrfs of its own.
func (e *Env) mountBtrfs(t testing.TB) {
	t.Helper()
	size := e.opts.BtrfsSize
	if size == 0 {
		size = 1 << 30
	}
	e.SnapshotterRoot = filepath.Join(e.Dir, "tupper-root")
	if e.Snapshotter == Btrfs {
		e.SnapshotterRoot = filepath.Join(e.Dir, "containerd", "root", "io.containerd.snapshotter.v1.btrfs")
	}
	if err := os.MkdirAll(e.SnapshotterRoot, 0o700); err != nil {
		t.Fatal(err)
	}
	undo, err := testutil.LoopbackBtrfs(size, e.SnapshotterRoot)
	if err != nil {
		t.Fatal(err)
	}
	e.undoBtrfs = undo
}

// writeContainerdConfig writes Dir/containerd.toml from Config.
func (e *Env) writeContainerdConfig(t testing.TB) {
	t.Helper()
	c := Config{
		Root:     filepath.Join(e.Dir, "containerd", "root"),
		State:    filepath.Join(e.Dir, "containerd", "state"),
		Address:  e.Address,
		CRI:      e.opts.CRI,
		LogLevel: "debug",
	}
	switch e.Snapshotter {
	case Tupper:
		c.TupperSocket, c.TupperRoot, c.Unpack = e.snapSock, e.SnapshotterRoot, []string{Tupper, Overlayfs}
	case Btrfs:
		c.Unpack = []string{Btrfs}
	}
	for _, d := range []string{c.Root, c.State} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	cfg := c.TOML()
	if e.opts.CRI {
		cfg += e.criRuntime()
	}
	if err := os.WriteFile(e.configPath(), []byte(cfg+e.opts.ExtraConfig), 0o644); err != nil {
		t.Fatal(err)
	}
}

// criRuntime is CRI's runtime handler "tupper": this Env's shim with its
// runtime options file.
func (e *Env) criRuntime() string {
	snap := ""
	if e.Snapshotter != Overlayfs {
		snap = fmt.Sprintf("    snapshotter = %q\n", e.Snapshotter)
	}
	return fmt.Sprintf(`
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.tupper]
    runtime_type = %q
    runtime_path = %q
%s    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.tupper.options]
      ConfigPath = %q
`, TupperRuntimeType, e.Shim, snap, e.RuntimeConfig)
}

func (e *Env) configPath() string { return filepath.Join(e.Dir, "containerd.toml") }

// StartContainerd starts containerd (again, after StopContainerd) and
// waits until it answers; its log is Dir/containerd.log.
func (e *Env) StartContainerd(t testing.TB) {
	t.Helper()
	bin, args := e.inNetns("containerd", "--config", e.configPath(), "--log-level", "debug")
	e.containerd = e.startDaemon(t, "containerd", bin, args...)
	e.waitReady(t, e.containerd, 60*time.Second, func() error { _, err := e.Ctr("version"); return err })
}

// StopContainerd stops containerd by PID; shims keep running.
func (e *Env) StopContainerd(t testing.TB) {
	t.Helper()
	if e.containerd != nil {
		e.containerd.Stop(t, 10*time.Second)
		e.containerd = nil
	}
}

// startSnapshotter starts tupper's snapshotter daemon on SnapshotterRoot.
func (e *Env) startSnapshotter(t testing.TB) {
	t.Helper()
	e.snapSock = filepath.Join(e.Dir, "tupper.sock")
	bin := e.binary(t, EnvSnapshotterBin, "containerd-tupper-snapshotter")
	e.snapshot = e.startDaemon(t, "snapshotter", bin, "--address", e.snapSock, "--root", e.SnapshotterRoot, "--log-level", "debug")
	e.waitReady(t, e.snapshot, 20*time.Second, func() error { return dialUnix(e.snapSock) })
}

// RestartSnapshotter stops tupper's snapshotter (SIGTERM, by PID), starts
// it again and waits until containerd, which redials with a backoff,
// reaches it.
func (e *Env) RestartSnapshotter(t testing.TB) {
	t.Helper()
	if e.snapshot == nil {
		t.Fatalf("no snapshotter daemon in this env (snapshotter %s)", e.Snapshotter)
	}
	e.snapshot.Stop(t, 10*time.Second)
	if err := e.snapshot.Err(); err != nil {
		t.Logf("snapshotter exit on SIGTERM: %v", err)
	}
	e.startSnapshotter(t)
	e.waitReady(t, e.containerd, 60*time.Second, func() error {
		_, err := e.Ctr("snapshots", "--snapshotter="+e.Snapshotter, "ls")
		return err
	})
}

// startDaemon runs a daemon with its output in Dir/<name>.log.
func (e *Env) startDaemon(t testing.TB, name, bin string, args ...string) *testutil.Daemon {
	t.Helper()
	d := testutil.StartDaemon(t, name, filepath.Join(e.Dir, name+".log"), e.daemonEnv(), bin, args...)
	e.daemons = append(e.daemons, d)
	return d
}

// waitReady polls ready until it succeeds, failing early if d exits.
func (e *Env) waitReady(t testing.TB, d *testutil.Daemon, timeout time.Duration, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		select {
		case <-d.Done():
			t.Fatalf("%s exited (%v) before it was ready: %v\n%s", d.Name, d.Err(), err, d.Tail(40))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %s: %v\n%s", d.Name, timeout, err, d.Tail(40))
		}
	}
}

// daemonEnv is the test's environment for a daemon: BinDir and
// /usr/local/bin (make deps) first on PATH, and no NOTIFY_SOCKET, so that
// a test run from a systemd unit does not have the daemons notify it.
func (e *Env) daemonEnv() []string {
	path := e.BinDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + os.Getenv("PATH")
	if e.Path != "" {
		path = e.Path
	}
	// containerd unpacks a checkpoint it restores from its content store
	// into a temporary directory under XDG_RUNTIME_DIR (else /tmp) and
	// never removes it: under Dir it goes with the Env.
	env := []string{"PATH=" + path, "XDG_RUNTIME_DIR=" + filepath.Join(e.Dir, "xdg")}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") {
			env = append(env, kv)
		}
	}
	return env
}

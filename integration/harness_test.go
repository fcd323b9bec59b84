package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/testutil"
)

// Environment knobs.
const (
	// envTupperBin overrides the snapshotter binary, by default
	// ../bin/containerd-tupper-snapshotter (from `make build`).
	envTupperBin = "TUPPER_BIN"
	// envSnapshotter=btrfs runs the suite against containerd's built-in
	// btrfs snapshotter instead of tupper: a check of the harness and of
	// the tests themselves, not of tupper.
	envSnapshotter = "TUPPER_TEST_SNAPSHOTTER"
	// envKeep=1 leaves a failed test's temp dir (logs, configs) in place;
	// daemons, mounts and loop devices are still cleaned up.
	envKeep = "TUPPER_TEST_KEEP"
)

// namespacePrefix starts the containerd namespace of every Env; each Env
// adds a random suffix so runs never share state, and its cleanup removes
// the /<namespace> cgroups the runtime made for its containers.
const namespacePrefix = "tupper-it-"

// Env is one private containerd + snapshotter pair on a fresh loopback
// btrfs, torn down when the test ends.
type Env struct {
	t *testing.T

	// Dir is the temp dir that holds everything: configs, logs, sockets,
	// the btrfs image file and the mountpoint.
	Dir string
	// Snapshotter is the name to pass as --snapshotter: "tupper", or
	// "btrfs" for containerd's built-in one.
	Snapshotter string
	// SnapshotterRoot is the snapshotter's root directory, on btrfs.
	SnapshotterRoot string
	// Address is containerd's gRPC socket.
	Address string
	// Namespace is the containerd namespace this Env's ctr calls use.
	Namespace string
	// bridge is this Env's tupper bridge, once TupperRuntime made it.
	bridge string

	snapSock  string
	loopDev   string
	loopImage string
	procs     []*testutil.Daemon
}

// requireEnv skips the test, loudly, when the machine cannot run it.
func requireEnv(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (run the integration tests as root)")
	}
	if fs, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(fs, []byte("\tbtrfs\n")) {
		missing = append(missing, "btrfs in /proc/filesystems (modprobe btrfs)")
	}
	for _, bin := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" on PATH (make deps)")
		}
	}
	if len(missing) > 0 {
		testutil.Require(t, "\n\n*** lacks "+strings.Join(missing, "; ")+" ***\n\n")
	}
	for _, bin := range []string{"mkfs.btrfs", "losetup", "btrfs", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not on PATH: run `make deps` (hack/install-deps.sh)", bin)
		}
	}
}

// tupperBin finds the snapshotter daemon.
func tupperBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(envTupperBin)
	if bin == "" {
		bin = filepath.Join("..", "bin", "containerd-tupper-snapshotter")
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("snapshotter binary %s: %v (run `make build`, or set %s)", abs, err, envTupperBin)
	}
	return abs
}

// NewEnv starts containerd and the snapshotter for t. Everything is
// stopped and removed by t.Cleanup.
func NewEnv(t *testing.T) *Env {
	t.Helper()
	requireEnv(t)

	snapshotter, bin := "tupper", ""
	if os.Getenv(envSnapshotter) == "btrfs" {
		snapshotter = "btrfs"
	} else {
		bin = tupperBin(t)
	}

	dir, err := os.MkdirTemp("", "tupper-it-")
	if err != nil {
		t.Fatal(err)
	}
	// Like containerd's own state dirs: traversable by the mapped root of a
	// user-namespaced container, which must reach its rootfs below here.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	e := &Env{t: t, Dir: dir, Snapshotter: snapshotter, Namespace: namespacePrefix + filepath.Base(dir)[len("tupper-it-"):]}
	t.Cleanup(e.cleanup)
	t.Logf("test env in %s, snapshotter %s", dir, e.Snapshotter)

	croot := filepath.Join(dir, "containerd", "root")
	cstate := filepath.Join(dir, "containerd", "state")
	for _, d := range []string{croot, cstate} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	e.Address = filepath.Join(dir, "containerd.sock")

	snapSock := filepath.Join(dir, "tupper.sock")
	e.snapSock = snapSock
	if e.Snapshotter == "btrfs" {
		e.SnapshotterRoot = filepath.Join(croot, "io.containerd.snapshotter.v1.btrfs")
	} else {
		e.SnapshotterRoot = filepath.Join(dir, "tupper-root")
	}
	e.mountBtrfs(filepath.Join(dir, "btrfs.img"), 1<<30, e.SnapshotterRoot)

	if e.Snapshotter == "tupper" {
		e.start("snapshotter", bin,
			"--address", snapSock,
			"--root", e.SnapshotterRoot,
			"--log-level", "debug")
		e.waitSocket("snapshotter", snapSock, 20*time.Second)
	}

	cfg := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(croot, cstate, e.Address, e.Snapshotter, snapSock, e.SnapshotterRoot)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.start("containerd", "containerd", "--config", cfg, "--log-level", "debug")
	e.waitContainerd(60 * time.Second)
	return e
}

// containerdConfig is a containerd 2.x config for a private instance: its
// own root, state and sockets, no CRI, no NRI, and the snapshotter wired
// in as a proxy plugin that the transfer service unpacks into.
func containerdConfig(root, state, address, snapshotter, snapSock, snapRoot string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version = 3
root = %q
state = %q
# Plugins that would be slow to start, or would share global sockets and
# state with another containerd on this machine.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.runtime",
  "io.containerd.cri.v1.images",
  "io.containerd.podsandbox.controller.v1.podsandbox",
  "io.containerd.sandbox.controller.v1.shim",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""
  level = "debug"

[metrics]
  address = ""
`, root, state, address, address+".ttrpc")
	if snapshotter == "tupper" {
		fmt.Fprintf(&b, `
[proxy_plugins]
  [proxy_plugins.tupper]
    type = "snapshot"
    address = %q
    capabilities = ["remap-ids"]
    [proxy_plugins.tupper.exports]
      root = %q
`, snapSock, snapRoot)
	}
	fmt.Fprintf(&b, `
[plugins.'io.containerd.transfer.v1.local']
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/amd64"
    snapshotter = %q
    differ = "walking"
`, snapshotter)
	return b.String()
}

// run executes a host command and fails the test on error.
func (e *Env) run(name string, args ...string) string {
	e.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mountBtrfs makes a sparse file of size bytes, formats it and mounts it on
// mnt through a loop device of its own.
func (e *Env) mountBtrfs(img string, size int64, mnt string) {
	e.t.Helper()
	f, err := os.Create(img)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		e.t.Fatal(err)
	}
	f.Close()
	e.run("mkfs.btrfs", "-q", img)
	dev := strings.TrimSpace(e.run("losetup", "--find", "--show", img))
	e.loopDev, e.loopImage = dev, img
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		e.t.Fatal(err)
	}
	e.run("mount", "-t", "btrfs", "-o", "noatime", dev, mnt)
	e.t.Logf("btrfs %s on %s", dev, mnt)
}

// start runs a daemon with its output in <Dir>/<name>.log.
func (e *Env) start(name, bin string, args ...string) {
	e.t.Helper()
	d := testutil.StartDaemon(e.t, name, filepath.Join(e.Dir, name+".log"), daemonEnv(), bin, args...)
	for i, old := range e.procs {
		if old.Name == name {
			e.procs[i] = d
			return
		}
	}
	e.procs = append(e.procs, d)
}

// daemonEnv is the test's environment for a daemon, with /usr/local/bin
// (make deps) first on PATH and without NOTIFY_SOCKET: a test run from a
// systemd unit must not have the daemons notify that unit.
func daemonEnv() []string {
	// bin/ first: containerd finds containerd-shim-tupper-v2 there.
	binDir, _ := filepath.Abs(filepath.Join("..", "bin"))
	if b := os.Getenv(envTupperBin); b != "" {
		binDir = filepath.Dir(b)
	}
	env := []string{"PATH=" + binDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + os.Getenv("PATH")}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (e *Env) daemon(name string) *testutil.Daemon {
	for _, d := range e.procs {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// RestartSnapshotter stops the snapshotter daemon (SIGTERM, by PID),
// starts it again with the same arguments and waits until containerd,
// which redials with a backoff, reaches it again.
func (e *Env) RestartSnapshotter() {
	e.t.Helper()
	d := e.daemon("snapshotter")
	if d == nil {
		e.t.Fatal("no snapshotter daemon in this env (built-in snapshotter?)")
	}
	d.Stop(e.t, 10*time.Second)
	if d.Err() != nil {
		e.t.Logf("snapshotter exit on SIGTERM: %v", d.Err())
	}
	e.start(d.Name, d.Bin, d.Args...)
	e.waitSocket(d.Name, e.snapSock, 20*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := e.Ctr("snapshots", "--snapshotter="+e.Snapshotter, "ls")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("containerd does not reach the restarted snapshotter: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitSocket waits until a daemon accepts connections on a unix socket.
func (e *Env) waitSocket(name, sock string, timeout time.Duration) {
	e.t.Helper()
	d := e.daemon(name)
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-d.Done():
			e.t.Fatalf("%s exited before serving %s: %v\n%s", name, sock, d.Err(), d.Tail(40))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: no socket %s after %s\n%s", name, sock, timeout, d.Tail(40))
		}
	}
}

func (e *Env) waitContainerd(timeout time.Duration) {
	e.t.Helper()
	d := e.daemon("containerd")
	deadline := time.Now().Add(timeout)
	for {
		if _, err := e.Ctr("version"); err == nil {
			return
		}
		select {
		case <-d.Done():
			e.t.Fatalf("containerd exited: %v\n%s", d.Err(), d.Tail(40))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("containerd not ready after %s\n%s", timeout, d.Tail(40))
		}
	}
}

// Ctr runs ctr against this env's containerd and returns its standard
// output; standard error (ctr's own warnings) goes into the error only.
func (e *Env) Ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	full := append([]string{"--address", e.Address, "--namespace", e.Namespace}, args...)
	cmd := exec.CommandContext(ctx, "ctr", full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ctr %s: %w\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// MustCtr is Ctr that fails the test on error.
func (e *Env) MustCtr(args ...string) string {
	e.t.Helper()
	out, err := e.Ctr(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// Subvolumes lists the btrfs subvolumes under the snapshotter root, as
// paths relative to it.
func (e *Env) Subvolumes() []string {
	e.t.Helper()
	out := e.run("btrfs", "subvolume", "list", "-o", e.SnapshotterRoot)
	var subs []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if i := strings.Index(line, " path "); i >= 0 {
			subs = append(subs, line[i+len(" path "):])
		}
	}
	return subs
}

// cleanup stops what NewEnv started, strictly by PID, and undoes its
// mounts and loop device. It logs rather than fails where it can go on.
func (e *Env) cleanup() {
	t := e.t
	if t.Failed() {
		for _, d := range e.procs {
			t.Logf("--- %s log (tail) ---\n%s", d.Name, d.Tail(60))
		}
	}

	// Shims are daemonized away from containerd: find them, and the
	// container processes, by the pid files in this env's state dir.
	e.killByPidFiles(filepath.Join(e.Dir, "containerd", "state"))

	// containerd first (it is the snapshotter's client), then the rest.
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].Stop(t, 10*time.Second)
	}

	mps, err := testutil.MountsUnder(e.Dir)
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	// Deepest first.
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for _, mp := range mps {
		if err := syscall.Unmount(mp, 0); err != nil {
			t.Logf("cleanup: umount %s: %v; detaching lazily", mp, err)
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
				t.Errorf("cleanup: umount -l %s: %v", mp, err)
			}
		}
	}

	testutil.RemoveCgroups(t, e.Namespace)

	if e.loopDev != "" {
		// Detach only if it still is our image's device.
		out, err := exec.Command("losetup", "-n", "-O", "BACK-FILE", e.loopDev).Output()
		if err == nil && strings.TrimSpace(string(out)) == e.loopImage {
			if out, err := exec.Command("losetup", "-d", e.loopDev).CombinedOutput(); err != nil {
				t.Errorf("cleanup: losetup -d %s: %v: %s", e.loopDev, err, out)
			}
		} else {
			t.Logf("cleanup: %s no longer backed by %s (%q, %v); leaving it", e.loopDev, e.loopImage, out, err)
		}
	}

	if t.Failed() && os.Getenv(envKeep) == "1" {
		t.Logf("cleanup: keeping %s (%s=1)", e.Dir, envKeep)
		return
	}
	if err := os.RemoveAll(e.Dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// killByPidFiles SIGKILLs every process named by a shim.pid or init.pid
// file below dir: shims and container processes of this env only.
func (e *Env) killByPidFiles(dir string) {
	_ = filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return nil
		}
		if de.Name() != "shim.pid" && de.Name() != "init.pid" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			return nil
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			e.t.Logf("cleanup: killed leftover pid %d (%s)", pid, p)
		}
		return nil
	})
}

// importImage builds the image of the given kind (buildImage) and imports
// it with ctr's snapshotter flag, returning its name.
func (e *Env) importImage(kind, snapshotterFlag string) string {
	e.t.Helper()
	archive, image := e.buildImage(kind)
	e.MustCtr("images", "import", snapshotterFlag, archive)
	return image
}

// buildImage writes the mkimage archive of the given kind into the env's
// dir and returns its path and image name.
func (e *Env) buildImage(kind string) (path, name string) {
	e.t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	name = "tupper.local/" + kind + ":latest"
	path = filepath.Join(e.Dir, kind+".tar")
	out, err := exec.Command(goBin, "run", "../hack/mkimage", "-kind", kind, "-name", name, "-o", path).CombinedOutput()
	if err != nil {
		e.t.Fatalf("building %s image: %v\n%s", kind, err, out)
	}
	return path, name
}

// Package clients runs the same nerdctl commands against containerd's runc
// shim and against tupper's, on one private containerd, and compares what
// a user would see.
//
// Everything runs inside a network namespace the test makes: containerd,
// and therefore the shims, the OCI hooks nerdctl installs and the CNI
// plugins they run. So the CNI bridge, its iptables rules and the
// ip_forward the bridge plugin turns on exist only there, and go when the
// test unmounts the namespace. nerdctl gets its own --data-root,
// --cni-netconfpath (a default "bridge" network of the test's own, with a
// bridge name and a subnet no other test uses, and host-local's state in
// the test's directory) and --address.
package clients

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/internal/testutil"
)

const (
	runcRuntime   = "io.containerd.runc.v2"
	tupperRuntime = "io.containerd.tupper.v2"
	image         = "tupper.local/busybox:latest"
)

type env struct {
	t       *testing.T
	dir     string
	netns   string // bind mount of the test's network namespace
	address string // containerd's socket
	ns      string // containerd namespace prefix: each runtime has its own
	bridge  string
	subnet  string // 10.216.N.0/24
	repo    string // the repository's root
	procs   []*testutil.Daemon
	undo    []func() error
}

func requireTools(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"nerdctl", "containerd", "ctr", "runc", "containerd-shim-runc-v2", "nsenter", "iptables", "mkfs.btrfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" on PATH (make deps)")
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		missing = append(missing, "/usr/lib/cni (containernetworking-plugins, make deps)")
	}
	if len(missing) > 0 {
		testutil.Require(t, "needs "+strings.Join(missing, ", "))
	}
}

// newEnv starts the snapshotter and containerd (in a fresh netns) and
// imports the busybox image for the tupper snapshotter.
func newEnv(t *testing.T) *env {
	t.Helper()
	requireTools(t)
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"containerd-tupper-snapshotter", "containerd-shim-tupper-v2"} {
		if _, err := os.Stat(filepath.Join(repo, "bin", b)); err != nil {
			t.Fatalf("bin/%s: %v (run `make build`)", b, err)
		}
	}
	dir, err := os.MkdirTemp("", "tupper-nerdctl-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	suffix := randHex(3)
	e := &env{t: t, dir: dir, repo: repo, address: filepath.Join(dir, "containerd.sock"),
		ns: "tupper-nerdctl-" + suffix, bridge: "tnc" + suffix,
		subnet: fmt.Sprintf("10.216.%d.0/24", 1+int(suffix[0])%250)}
	t.Cleanup(e.cleanup)
	e.makeNetns()
	snapRoot := filepath.Join(dir, "snap")
	if err := os.MkdirAll(snapRoot, 0o700); err != nil {
		t.Fatal(err)
	}
	e.mountBtrfs(snapRoot)
	snapSock := filepath.Join(dir, "tupper.sock")
	e.start("snapshotter", filepath.Join(repo, "bin", "containerd-tupper-snapshotter"),
		"--address", snapSock, "--root", snapRoot)
	e.waitFor("snapshotter", func() error { _, err := os.Stat(snapSock); return err })
	cfg := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(dir, e.address, snapSock)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.start("containerd", "nsenter", "--net="+e.netns, "--", "containerd", "--config", cfg)
	e.waitFor("containerd", func() error { _, err := e.ctr("default", "version"); return err })
	e.writeCNIConfig()
	e.importImage()
	return e
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// makeNetns makes a network namespace, bind-mounted on <dir>/netns, from a
// thread that unshares and then dies with it (never unlocked), with lo up.
func (e *env) makeNetns() {
	e.netns = filepath.Join(e.dir, "netns")
	if err := os.WriteFile(e.netns, nil, 0o644); err != nil {
		e.t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread ends with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), e.netns, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		e.t.Fatalf("test network namespace: %v", err)
	}
	if out, err := exec.Command("nsenter", "--net="+e.netns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		e.t.Fatalf("lo up in the test netns: %v: %s", err, out)
	}
}

// mountBtrfs puts a loopback btrfs on dir, unmounted by cleanup (after
// the daemons using it are gone, not by a t.Cleanup of its own, which
// would run first).
func (e *env) mountBtrfs(dir string) {
	undo, err := testutil.LoopbackBtrfs(1<<30, dir)
	if err != nil {
		e.t.Fatal(err)
	}
	e.undo = append(e.undo, undo)
}

func containerdConfig(dir, address, snapSock string) string {
	return fmt.Sprintf(`version = 3
root = %q
state = %q
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
  address = "%s.ttrpc"
[debug]
  level = "debug"
[metrics]
  address = ""
[proxy_plugins]
  [proxy_plugins.tupper]
    type = "snapshot"
    address = %q
    capabilities = ["remap-ids"]
[plugins.'io.containerd.transfer.v1.local']
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/amd64"
    snapshotter = "tupper"
    differ = "walking"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), address, address, snapSock)
}

// writeCNIConfig writes nerdctl's default network ("bridge", which nerdctl
// would otherwise make as nerdctl0 on 10.4.0.0/24 with its IPAM state in
// /var/lib/cni) with this test's bridge, subnet and IPAM directory, and
// no masquerading: nothing leaves the namespace anyway.
func (e *env) writeCNIConfig() {
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "bridge",
  "nerdctlID": "%s",
  "nerdctlLabels": {"nerdctl/default-network": "true"},
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall", "ingressPolicy": "same-bridge"},
    {"type": "tuning"}
  ]
}
`, randHex(32), e.bridge, filepath.Join(e.dir, "cni-ipam"), e.subnet)
	dir := filepath.Join(e.dir, "cni")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nerdctl-bridge.conflist"), []byte(conf), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) importImage() {
	archive := filepath.Join(e.dir, "busybox.tar")
	cmd := exec.Command("go", "run", "./hack/mkimage", "-kind", "busybox", "-name", image, "-o", archive)
	cmd.Dir = e.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("mkimage: %v\n%s", err, out)
	}
	for _, r := range e.runners() {
		if out, err := e.ctr(r.ns, "images", "import", "--snapshotter", "tupper", archive); err != nil {
			e.t.Fatalf("import: %v\n%s", err, out)
		}
	}
}

func (e *env) daemonEnv() []string {
	env := []string{"PATH=" + filepath.Join(e.repo, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			env = append(env, kv)
		}
	}
	return env
}

func (e *env) start(name, bin string, args ...string) {
	e.procs = append(e.procs, testutil.StartDaemon(e.t, name, filepath.Join(e.dir, name+".log"), e.daemonEnv(), bin, args...))
}

// waitFor polls ready until it succeeds, failing when the daemon just
// started exits or a minute passes.
func (e *env) waitFor(name string, ready func() error) {
	e.t.Helper()
	d := e.procs[len(e.procs)-1]
	deadline := time.Now().Add(time.Minute)
	for {
		err := ready()
		if err == nil {
			return
		}
		select {
		case <-d.Done():
			e.t.Fatalf("%s exited: %v\n%s", name, d.Err(), d.Tail(40))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not ready: %v\n%s", name, err, d.Tail(40))
		}
	}
}

// ctr runs ctr in containerd namespace ns.
func (e *env) ctr(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", e.address, "--namespace", ns}, args...)...).CombinedOutput()
	return string(out), err
}

// inNetns runs a host command inside the test's network namespace.
func (e *env) inNetns(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + e.netns, "--"}, args...)...).CombinedOutput()
	return string(out), err
}

// cleanup removes every container nerdctl knows, stops what the test
// started (by PID), and undoes mounts, the netns (and with it the bridge
// and iptables rules), cgroups and the CNI results cache files of this
// test's containers.
func (e *env) cleanup() {
	t := e.t
	if t.Failed() {
		for _, d := range e.procs {
			t.Logf("--- %s log (tail) ---\n%s", d.Name, d.Tail(40))
		}
	}
	for _, r := range e.runners() {
		if ids := e.containerIDs(r.ns); len(ids) > 0 {
			r.nerdctl(append([]string{"rm", "-f", "-v"}, ids...)...)
		}
	}
	e.killByPidFiles(filepath.Join(e.dir, "state"))
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].Stop(t, 10*time.Second)
	}
	mps, _ := testutil.MountsUnder(e.dir)
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for _, mp := range mps {
		if mp == filepath.Join(e.dir, "snap") {
			continue // the btrfs: undone below
		}
		if err := unix.Unmount(mp, 0); err != nil {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
	for _, undo := range e.undo {
		if err := undo(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	for _, r := range e.runners() {
		testutil.RemoveCgroups(t, r.ns)
	}
	e.removeCNIState()
	if t.Failed() && os.Getenv("TUPPER_TEST_KEEP") != "" {
		t.Logf("kept %s", e.dir)
		return
	}
	if err := os.RemoveAll(e.dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// removeCNIState removes what CNI keeps on the host outside the test's
// directory: libcni's result cache (/var/lib/cni/results/<network>-<ns>-
// <id>-<ifname>, left by a container whose CNI DEL never ran) for this
// test's namespaces, and host-local's state of the networks that nerdctl
// compose made (compose networks get the default dataDir; their names
// carry the test's random project name).
func (e *env) removeCNIState() {
	for _, r := range e.runners() {
		files, _ := filepath.Glob("/var/lib/cni/results/*-" + r.ns + "-*")
		for _, f := range files {
			e.t.Logf("cleanup: removing CNI cache %s", f)
			os.Remove(f)
		}
	}
	dirs, _ := filepath.Glob("/var/lib/cni/networks/" + e.project() + "_*")
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// project is the compose project name, unique to the test run.
func (e *env) project() string { return "tnc" + strings.TrimPrefix(e.bridge, "tnc") + "demo" }

// containerIDs lists every container of a containerd namespace.
func (e *env) containerIDs(ns string) []string {
	out, err := e.ctr(ns, "containers", "ls", "-q")
	if err != nil {
		return nil
	}
	return strings.Fields(out)
}

func (e *env) killByPidFiles(dir string) {
	filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() || (de.Name() != "shim.pid" && de.Name() != "init.pid") {
			return nil
		}
		b, _ := os.ReadFile(p)
		if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && pid > 1 {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				e.t.Logf("cleanup: killed leftover pid %d (%s)", pid, p)
			}
		}
		return nil
	})
}

// Package shim runs containerd-shim-tupper-v2 under a real containerd
// v2.4 with ctr, on containerd's default overlayfs snapshotter (the
// tupper snapshotter's own suite is in integration/).
//
// Needs root, containerd and ctr (PATH, /usr/local/bin or ~/go/bin) and
// /bin/busybox. TUPPER_SHIM=/path/to/containerd-shim-tupper-v2 tests a
// prebuilt shim; otherwise the test builds one.
package shim

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/testutil"
)

type env struct {
	t    *testing.T
	dir  string
	bin  string // dir holding the shim, first on PATH
	shim string
	sock string
	ns   string
	cd   *testutil.Daemon
	path string

	bridge, subnet, runtimeConfig string // this env's tupper network
	slice                         string // systemd cgroup driver only (driver_test.go)
}

func lookBin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/local/bin", os.ExpandEnv("$HOME/go/bin"), "/root/go/bin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root")
	}
	containerd, ctr := lookBin("containerd"), lookBin("ctr")
	if containerd == "" || ctr == "" || !fileExists("/bin/busybox") {
		testutil.Require(t, "needs containerd, ctr and /bin/busybox (make deps)")
	}
	dir, err := os.MkdirTemp("", "tshim")
	if err != nil {
		t.Fatal(err)
	}
	n := time.Now().UnixNano()
	e := &env{t: t, dir: dir, bin: filepath.Join(dir, "bin"), sock: filepath.Join(dir, "c.sock"),
		ns: fmt.Sprintf("tshim%d", n%1e6), bridge: fmt.Sprintf("tpi%d", n%1e6),
		subnet: fmt.Sprintf("10.213.%d.0/24", 100+n%100), runtimeConfig: filepath.Join(dir, "tupper-runtime.toml")}
	if cgroupDriver(t) {
		e.slice = sliceName(n)
	}
	// tupper networks every ctr container; this env's get a bridge, subnet
	// and IPAM directory of their own, through the runtime options.
	os.WriteFile(e.runtimeConfig, []byte(fmt.Sprintf("Bridge = %q\nSubnet = %q\nNetworkStateDir = %q\n%s",
		e.bridge, e.subnet, filepath.Join(dir, "net"), e.runtimeOptions())), 0o644)
	os.MkdirAll(e.bin, 0o755)
	e.path = e.bin + ":" + filepath.Dir(ctr) + ":" + filepath.Dir(containerd) + ":" + os.Getenv("PATH")
	// Subtests set e.t; the cleanup reports to the test that made the env,
	// which is still running then.
	t.Cleanup(func() { e.t = t; e.cleanup() })
	e.shim = filepath.Join(e.bin, "containerd-shim-tupper-v2")
	if p := os.Getenv("TUPPER_SHIM"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(e.shim, b, 0o755)
	} else {
		// go test runs in the package directory, inside the module.
		out, err := exec.Command("go", "build", "-o", e.shim, "github.com/tupper/tupper/cmd/containerd-shim-tupper-v2").CombinedOutput()
		if err != nil {
			t.Fatalf("build shim: %v\n%s", err, out)
		}
	}
	if p := lookBin("containerd-shim-runc-v2"); p != "" {
		os.Symlink(p, filepath.Join(e.bin, "containerd-shim-runc-v2"))
	}
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]
[grpc]
  address = %q
[ttrpc]
  address = "%s.ttrpc"
[debug]
  level = "debug"
[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), e.sock, e.sock)
	os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644)
	e.startContainerd(containerd)
	tarPath := filepath.Join(dir, "tbox.tar")
	if err := writeBusyboxImage(tarPath, "docker.io/library/tshim:latest"); err != nil {
		t.Fatal(err)
	}
	e.mustCtr("images", "import", tarPath)
	return e
}

func (e *env) startContainerd(containerd string) {
	t := e.t
	e.cd = testutil.StartDaemon(t, "containerd", filepath.Join(e.dir, "containerd.log"),
		append(os.Environ(), "PATH="+e.path), containerd, "--config", filepath.Join(e.dir, "config.toml"))
	for i := 0; ; i++ {
		if _, err := e.ctr("version"); err == nil {
			break
		}
		if i > 100 {
			t.Fatalf("containerd did not come up:\n%s", e.cd.Tail(60))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopContainerd stops containerd by pid; shims keep running.
func (e *env) stopContainerd() {
	e.cd.Stop(e.t, 10*time.Second)
	e.cd = nil
}

// ctr runs ctr and returns stdout+stderr without containerd's cgroup v1
// deprecation noise.
func (e *env) ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", e.ctrArgs(args)...)
	cmd.Env = append(os.Environ(), "PATH="+e.path)
	out, err := cmd.CombinedOutput()
	return clean(string(out)), err
}

func clean(s string) string {
	var keep []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(l, "DEPRECATION") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

func (e *env) mustCtr(args ...string) string {
	e.t.Helper()
	out, err := e.ctr(args...)
	if err != nil {
		e.t.Fatalf("ctr %v: %v\n%s", args, err, out)
	}
	return out
}

// underPty runs a shell command line under script(1), which gives ctr a
// pseudo-terminal.
func (e *env) underPty(cmdline string, stdin string) (string, error) {
	if lookBin("script") == "" {
		e.t.Skip("needs script(1)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-qec", cmdline, "/dev/null")
	cmd.Env = append(os.Environ(), "PATH="+e.path)
	// An *os.File stdin: os/exec then copies nothing and Wait does not
	// wait for our writer. Without input, stdin stays open until the
	// command is done, so that script(1) passes no EOF to the container.
	pr, pw, err := os.Pipe()
	if err != nil {
		e.t.Fatal(err)
	}
	defer pr.Close()
	cmd.Stdin = pr
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if stdin != "" {
			time.Sleep(time.Second)
			io.WriteString(pw, stdin)
			time.Sleep(3 * time.Second)
			pw.Close()
		}
	}()
	out, err := cmd.CombinedOutput()
	<-writerDone
	pw.Close()
	return strings.ReplaceAll(clean(string(out)), "\r", ""), err
}

func (e *env) ctrLine(args ...string) string {
	return strings.Join(append([]string{"ctr"}, e.ctrArgs(args)...), " ")
}

// ctrArgs addresses this env's containerd, and gives every tupper `ctr run`
// this env's network options.
func (e *env) ctrArgs(args []string) []string {
	args = e.withCgroupsPath(args)
	if len(args) > 0 && args[0] == "run" && slices.Contains(args, "io.containerd.tupper.v2") && !slices.Contains(args, "--config") {
		args = append([]string{"run", "--runtime-config-path", e.runtimeConfig}, args[1:]...)
	}
	return append([]string{"--address", e.sock, "--namespace", e.ns}, args...)
}

const image = "docker.io/library/tshim:latest"

// run is `ctr run --rm` with the tupper runtime; it returns the output
// and ctr's exit code.
func (e *env) run(id string, extra []string, args ...string) (string, int) {
	e.t.Helper()
	a := append([]string{"run", "--rm", "--runtime", "io.containerd.tupper.v2"}, extra...)
	a = append(append(a, image, id), args...)
	out, err := e.ctr(a...)
	return out, exitCode(e.t, err)
}

func exitCode(t *testing.T, err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatal(err)
	return -1
}

func (e *env) taskPid(id string) int {
	e.t.Helper()
	for _, l := range strings.Split(e.mustCtr("task", "ls"), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == id {
			pid, _ := strconv.Atoi(f[1])
			return pid
		}
	}
	e.t.Fatalf("task %s not listed", id)
	return 0
}

func (e *env) waitStopped(id string) {
	e.t.Helper()
	for i := 0; i < 100; i++ {
		for _, l := range strings.Split(e.mustCtr("task", "ls"), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == id && f[2] == "STOPPED" {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("task %s did not stop", id)
}

// shimPids lists processes running this env's shim binary.
func (e *env) shimPids() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && strings.TrimSuffix(exe, " (deleted)") == e.shim {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); !strings.HasPrefix(string(b), "tupper-init") {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// mountsUnder lists mount points below dir.
// mountsUnder is testutil.MountsUnder for checks that poll: an unreadable
// mountinfo reads as no mounts, and the next check fails on what is left.
// newShim is the shim that runs now and did not before (a list from
// shimPids); the test fails without one.
func (e *env) newShim(before []int) int {
	e.t.Helper()
	for _, p := range e.shimPids() {
		if !contains(before, p) {
			return p
		}
	}
	e.t.Fatal("no shim found")
	return 0
}

func mountsUnder(dir string) []string {
	ms, _ := testutil.MountsUnder(dir)
	return ms
}

func (e *env) cleanup() {
	// Remove whatever a failed test left, then stop containerd and any
	// shim of ours by pid, and undo mounts below our directory.
	if out, err := e.ctr("task", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			e.ctr("task", "kill", "-s", "KILL", id)
			time.Sleep(100 * time.Millisecond)
			e.ctr("task", "delete", "-f", id)
		}
	}
	if out, err := e.ctr("containers", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			e.ctr("containers", "rm", id)
		}
	}
	if e.cd != nil {
		e.stopContainerd()
	}
	for _, pid := range e.shimPids() {
		e.t.Errorf("shim %d left running; killing it", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	e.stopSlice()
	removeNamespaceCgroups(e.ns)
	ms := mountsUnder(e.dir)
	for i := len(ms) - 1; i >= 0; i-- {
		syscall.Unmount(ms[i], syscall.MNT_DETACH)
	}
	testutil.RemoveCgroups(e.t, e.ns)
	exec.Command("ip", "link", "del", e.bridge).Run()
	if e.t.Failed() && os.Getenv("TUPPER_TEST_KEEP") != "" {
		e.t.Logf("kept %s", e.dir)
		return
	}
	os.RemoveAll(e.dir)
}

// writeBusyboxImage writes an OCI image layout archive holding a static
// busybox with its applet links, a passwd and a group file, and /escape,
// a symlink pointing above the root.
func writeBusyboxImage(path, name string) error {
	applets, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return err
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode})
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	for _, a := range strings.Fields(string(applets)) {
		if a != "busybox" {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777})
		}
	}
	// A link that climbs out of any rootfs, for the escape test.
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "escape", Linkname: "../../../../../../../../tmp", Mode: 0o777})
	for n, data := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/tmp:/bin/sh\n",
		"etc/group":  "root:x:0:\nalice:x:1000:\n",
	} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(data))})
		tw.Write([]byte(data))
	}
	tw.Close()
	digest := func(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest(layer.Bytes())}},
	})
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(cfg), "size": len(cfg)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer.Bytes()), "size": layer.Len()}},
	})
	idx, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(man), "size": len(man),
			"annotations": map[string]string{"io.containerd.image.name": name}}},
	})
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ow := tar.NewWriter(f)
	add := func(n string, b []byte) {
		ow.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b))})
		ow.Write(b)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", idx)
	for _, b := range [][]byte{layer.Bytes(), cfg, man} {
		add("blobs/sha256/"+strings.TrimPrefix(digest(b), "sha256:"), b)
	}
	return ow.Close()
}

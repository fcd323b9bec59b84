package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTupperRuntimeOnTupperSnapshotter runs containers with tupper's own
// runtime on tupper's snapshotter: the multi-layer image's rootfs is right
// as the container sees it, exit statuses come back, and removing the image
// leaves no subvolume.
func TestTupperRuntimeOnTupperSnapshotter(t *testing.T) {
	e := NewEnv(t)
	if e.Snapshotter != "tupper" {
		t.Skip("tupper's runtime is tested on tupper's snapshotter")
	}
	tupper := e.TupperRuntime()
	run := func(args ...string) (string, error) {
		return e.Ctr(append(append([]string{"run", "--rm", "--snapshotter", "tupper"}, tupper...), args...)...)
	}

	image := e.importImage("layers", "--snapshotter=tupper")
	if out, err := run(image, uniqueID("hello"), "echo", "hello"); err != nil || out != "hello\n" {
		t.Fatalf("echo hello: %v %q", err, out)
	}
	out, err := run(image, uniqueID("exit"), "sh", "-c", "exit 7")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("sh -c 'exit 7': %v %q", err, out)
	}
	exps, err := loadExpectations("../hack/mkimage/layers-rootfs.txt")
	if err != nil {
		t.Fatal(err)
	}
	out, err = run(image, uniqueID("rootfs"), "/bin/sh", "-c", probeScript(exps))
	if err != nil {
		t.Fatalf("rootfs probe: %v\n%s", err, out)
	}
	recs, err := parseProbe(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, msg := range compareRootfs(exps, recs) {
		t.Error(msg)
	}

	e.MustCtr("images", "rm", "--sync", image)
	var subs []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if subs = e.Subvolumes(); len(subs) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(subs) != 0 {
		t.Fatalf("subvolumes left: %s", strings.Join(subs, "\n"))
	}
}

// TupperRuntime returns the ctr run flags that select tupper's runtime
// with a bridge, subnet and address pool of this Env's own; the bridge is
// deleted when the test ends.
func (e *Env) TupperRuntime() []string {
	e.t.Helper()
	if _, err := os.Stat(filepath.Join("..", "bin", "containerd-shim-tupper-v2")); err != nil {
		e.t.Fatalf("containerd-shim-tupper-v2 not built: %v (make build)", err)
	}
	opts := filepath.Join(e.Dir, "tupper-runtime.toml")
	if _, err := os.Stat(opts); err != nil {
		n := time.Now().UnixNano()
		e.bridge = fmt.Sprintf("tpr%d", n%1e6)
		toml := fmt.Sprintf("Bridge = %q\nSubnet = \"10.213.%d.0/24\"\nNetworkStateDir = %q\n", e.bridge, 100+n%100, e.IPAMDir())
		if err := os.WriteFile(opts, []byte(toml), 0o644); err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { exec.Command("ip", "link", "del", e.bridge).Run() })
	}
	return []string{"--runtime", "io.containerd.tupper.v2", "--runtime-config-path", opts}
}

// IPAMDir is where this Env's tupper network keeps its address allocations.
func (e *Env) IPAMDir() string { return filepath.Join(e.Dir, "net") }

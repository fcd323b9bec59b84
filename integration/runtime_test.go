package integration

import (
	"errors"
	"os/exec"
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
	e.requireTupper()
	tupper := e.TupperRuntime()
	run := func(args ...string) (string, error) {
		return e.Ctr(append(append([]string{"run", "--rm", "--snapshotter", "tupper"}, tupper...), args...)...)
	}

	image := e.importImage("layers")
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
	if subs := e.waitNoSubvolumes(10 * time.Second); len(subs) != 0 {
		t.Fatalf("subvolumes left: %s", strings.Join(subs, "\n"))
	}
}

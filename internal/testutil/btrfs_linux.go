// Package testutil holds fixtures shared by tupper's tests: root checks that
// refuse to skip silently, and loopback btrfs filesystems that clean up after
// themselves.
package testutil

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/containerd/continuity/testutil/loopback"
	"golang.org/x/sys/unix"
)

// EnvStrict, when set (make test sets it), turns every "needs root/tool"
// skip into a failure: on the project's machines these tests must run.
const EnvStrict = "TUPPER_TEST_STRICT"

// Require skips the test, loudly, when reason is not empty, or fails it under EnvStrict.
func Require(t testing.TB, reason string) {
	t.Helper()
	if reason == "" {
		return
	}
	if os.Getenv(EnvStrict) != "" {
		t.Fatalf("%s is set but this test %s", EnvStrict, reason)
	}
	t.Skipf("SKIPPING %s: it %s", t.Name(), reason)
}

// NeedRoot requires root and mkfs.btrfs.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Require(t, "needs root")
	}
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		Require(t, "needs mkfs.btrfs (apt-get install btrfs-progs)")
	}
}

// NewBtrfs makes a loopback btrfs of size bytes mounted on a fresh directory.
func NewBtrfs(t testing.TB, size int64) string {
	t.Helper()
	NeedRoot(t)
	return MountBtrfs(t, size, t.TempDir())
}

// MountBtrfs makes a loopback btrfs of size bytes and mounts it on dir; the
// test's cleanup unmounts it and detaches the loop device.
func MountBtrfs(t testing.TB, size int64, dir string) string {
	t.Helper()
	loop, err := loopback.New(size)
	if err != nil {
		t.Fatalf("loop device: %v", err)
	}
	t.Cleanup(func() {
		if err := loop.Close(); err != nil {
			t.Errorf("detaching %s: %v", loop.Device, err)
		}
	})
	if out, err := exec.Command("mkfs.btrfs", "-q", "-f", loop.Device).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs %s: %v: %s", loop.Device, err, out)
	}
	if err := unix.Mount(loop.Device, dir, "btrfs", 0, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", loop.Device, dir, err)
	}
	t.Cleanup(func() { Unmount(t, dir) })
	return dir
}

// Unmount unmounts dir, waiting out the short EBUSY after a process that
// used the filesystem has just exited. Not mounted is not an error.
func Unmount(t testing.TB, dir string) {
	t.Helper()
	var err error
	for i := 0; i < 50; i++ {
		if err = unix.Unmount(dir, 0); err == nil || err == unix.EINVAL || err == unix.ENOENT {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("unmounting %s: %v", dir, err)
}

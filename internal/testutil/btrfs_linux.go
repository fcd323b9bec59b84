// Package testutil holds fixtures shared by tupper's tests: root checks that
// refuse to skip silently, and loopback btrfs filesystems that clean up after
// themselves.
package testutil

import (
	"errors"
	"fmt"
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

// EnvKeep=1 keeps a failed test's directory (logs, configs) for a look
// afterwards; daemons, mounts, loop devices and links are undone anyway.
const EnvKeep = "TUPPER_TEST_KEEP"

// Keep reports whether EnvKeep asks to keep a failed test's directory.
func Keep() bool { return os.Getenv(EnvKeep) == "1" }

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
	undo, err := LoopbackBtrfs(size, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := undo(); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// LoopbackBtrfs mounts a fresh loopback btrfs of size bytes on dir and
// returns what undoes it: for callers, such as containerd's test suite
// factories, that must unmount before their own cleanup removes dir.
func LoopbackBtrfs(size int64, dir string) (undo func() error, err error) {
	loop, err := loopback.New(size)
	if err != nil {
		return nil, fmt.Errorf("loop device: %w", err)
	}
	if out, err := exec.Command("mkfs.btrfs", "-q", "-f", loop.Device).CombinedOutput(); err != nil {
		loop.Close()
		return nil, fmt.Errorf("mkfs.btrfs %s: %v: %s", loop.Device, err, out)
	}
	if err := unix.Mount(loop.Device, dir, "btrfs", 0, ""); err != nil {
		loop.Close()
		return nil, fmt.Errorf("mount %s on %s: %w", loop.Device, dir, err)
	}
	return func() error {
		return errors.Join(unmount(dir), loop.Close())
	}, nil
}

// Unmount unmounts everything on dir, waiting out the short EBUSY after a process that
// used the filesystem has just exited. Not mounted is not an error.
func Unmount(t testing.TB, dir string) {
	t.Helper()
	if err := unmount(dir); err != nil {
		t.Error(err)
	}
}

// unmount removes every mount stacked on dir (an idmapped mount sits on
// top of its bind mount), retrying a busy one for a few seconds.
func unmount(dir string) error {
	var err error
	for i := 0; i < 50; {
		err = unix.Unmount(dir, 0)
		switch {
		case err == nil:
			continue // there may be another one underneath
		case err == unix.EINVAL || err == unix.ENOENT:
			return nil // nothing (more) mounted there
		}
		i++
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("unmounting %s: %w", dir, err)
}

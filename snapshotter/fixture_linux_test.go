package snapshotter

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/containerd/continuity/testutil/loopback"
	"github.com/containerd/log/logtest"
	"golang.org/x/sys/unix"
)

// needRoot skips a test that needs root and btrfs, loudly, unless
// TUPPER_TEST_STRICT is set (make test sets it), in which case it fails: on
// the project's machines these tests must run, never silently skip.
func needRoot(t testing.TB) {
	t.Helper()
	var reason string
	if os.Geteuid() != 0 {
		reason = "needs root"
	} else if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		reason = "needs mkfs.btrfs (apt-get install btrfs-progs)"
	}
	if reason == "" {
		return
	}
	if os.Getenv("TUPPER_TEST_STRICT") != "" {
		t.Fatalf("TUPPER_TEST_STRICT is set but this test %s", reason)
	}
	t.Skipf("SKIPPING %s: it %s", t.Name(), reason)
}

// newBtrfs makes a loopback btrfs of size bytes mounted at a fresh directory
// and undoes all of it when the test ends.
func newBtrfs(t testing.TB, size int64) string {
	t.Helper()
	needRoot(t)
	return mountBtrfs(t, size, t.TempDir())
}

func mountBtrfs(t testing.TB, size int64, dir string) string {
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
	t.Cleanup(func() { unmountRetry(t, dir) })
	return dir
}

// unmountRetry unmounts dir, waiting out the short EBUSY after a process that
// used the filesystem has just exited.
func unmountRetry(t testing.TB, dir string) {
	var err error
	for i := 0; i < 50; i++ {
		if err = unix.Unmount(dir, 0); err == nil || err == unix.EINVAL || err == unix.ENOENT {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("unmounting %s: %v", dir, err)
}

func testContext(t testing.TB) context.Context {
	return logtest.WithT(context.Background(), t)
}

// newTestSnapshotter opens a snapshotter on a fresh loopback btrfs.
func newTestSnapshotter(t testing.TB, opts ...Opt) *Snapshotter {
	t.Helper()
	root := filepath.Join(newBtrfs(t, 256<<20), "root")
	s, err := NewSnapshotter(testContext(t), root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// state is what must agree after every operation and every recovery: the
// subvolume paths metadata knows and the entries on disk.
type state struct {
	known, onDisk []string
}

func readState(t testing.TB, s *Snapshotter) state {
	t.Helper()
	var st state
	err := s.ms.WithTransaction(testContext(t), false, func(ctx context.Context) error {
		m, err := s.knownPaths(ctx)
		for p := range m {
			st.known = append(st.known, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range kindDirs {
		entries, err := os.ReadDir(filepath.Join(s.root, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			st.onDisk = append(st.onDisk, filepath.Join(s.root, dir, e.Name()))
		}
	}
	sort.Strings(st.known)
	sort.Strings(st.onDisk)
	return st
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// consistent: every snapshot in metadata has its subvolume, and no subvolume is orphaned.
func (st state) consistent() bool { return sameStrings(st.known, st.onDisk) }

func (st state) equal(o state) bool {
	return st.consistent() && o.consistent() && sameStrings(st.known, o.known)
}

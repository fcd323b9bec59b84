package snapshotter

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/btrfs/v2"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/internal/testutil"
)

// TestSnapshotterSuite runs containerd's own conformance suite, each subtest
// on its own fresh loopback btrfs.
func TestSnapshotterSuite(t *testing.T) {
	needRoot(t)
	for _, mode := range []QuotaMode{QuotaAuto, QuotaOff} {
		t.Run(string(mode), func(t *testing.T) {
			testsuite.SnapshotterSuite(t, "tupper", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
				undo, err := testutil.LoopbackBtrfs(128<<20, root)
				if err != nil {
					return nil, nil, err
				}
				s, err := NewSnapshotter(ctx, root, WithQuotaMode(mode))
				if err != nil {
					return nil, nil, errors.Join(err, undo())
				}
				return s, func() error { return errors.Join(s.Close(), undo()) }, nil
			})
		})
	}
}

// mountSnapshot mounts a snapshot's mounts the way containerd does and
// unmounts them when the test ends.
func mountSnapshot(t *testing.T, mounts []mount.Mount) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatalf("mounting %+v: %v", mounts, err)
	}
	t.Cleanup(func() { unmountRetry(t, dir) })
	return dir
}

// writeFile writes size bytes and fsyncs; writeBuffered leaves them dirty
// in the page cache.
func writeFile(path string, size int) error { return write(path, size, true) }

func writeBuffered(path string, size int) error { return write(path, size, false) }

func write(path string, size int, sync bool) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := bytes.Repeat([]byte{0xa5}, 1<<20)
	for size > 0 {
		n := min(size, len(buf))
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		size -= n
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

const mib = 1 << 20

func TestUsage(t *testing.T) {
	for _, mode := range []QuotaMode{QuotaSimple, QuotaClassic, QuotaOff} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == QuotaSimple && !haveSimpleQuota() {
				// A kernel before 6.7: simple quotas are refused, saying why.
				_, err := NewSnapshotter(testContext(t), filepath.Join(newBtrfs(t, 256<<20), "root"), WithQuotaMode(mode))
				if err == nil || !strings.Contains(err.Error(), "Linux 6.7") || !strings.Contains(err.Error(), "classic") {
					t.Fatalf("simple quotas on a kernel without them: %v, want a refusal naming Linux 6.7 and classic", err)
				}
				return
			}
			s := newTestSnapshotter(t, WithQuotaMode(mode))
			if (mode == QuotaOff) != (s.QuotaMode() == "") {
				t.Fatalf("quota mode %s gave kernel mode %q", mode, s.QuotaMode())
			}
			ctx := testContext(t)
			walks, syncs := walkCount.Load(), syncCount.Load()

			mounts, err := s.Prepare(ctx, "layer-active", "")
			if err != nil {
				t.Fatal(err)
			}
			dir := mountSnapshot(t, mounts)
			// Not synced: what is still in the page cache counts at once.
			if err := writeBuffered(filepath.Join(dir, "ten"), 10*mib); err != nil {
				t.Fatal(err)
			}
			u, err := s.Usage(ctx, "layer-active")
			if err != nil {
				t.Fatal(err)
			}
			if u.Size < 10*mib || u.Size > 12*mib {
				t.Fatalf("active usage after writing 10 MiB: %d bytes", u.Size)
			}
			unmountRetry(t, dir)
			if err := s.Commit(ctx, "layer", "layer-active"); err != nil {
				t.Fatal(err)
			}
			u, err = s.Usage(ctx, "layer")
			if err != nil {
				t.Fatal(err)
			}
			if u.Size < 10*mib || u.Size > 12*mib {
				t.Fatalf("committed usage of a 10 MiB layer: %d bytes", u.Size)
			}

			// A container on top of the layer is charged only for what it writes.
			mounts, err = s.Prepare(ctx, "container", "layer")
			if err != nil {
				t.Fatal(err)
			}
			dir = mountSnapshot(t, mounts)
			if err := writeFile(filepath.Join(dir, "five"), 5*mib); err != nil {
				t.Fatal(err)
			}
			u, err = s.Usage(ctx, "container")
			if err != nil {
				t.Fatal(err)
			}
			if u.Size < 5*mib || u.Size >= 10*mib {
				t.Fatalf("container usage after writing 5 MiB on a 10 MiB layer: %d bytes", u.Size)
			}
			walked := walkCount.Load() - walks
			if mode == QuotaOff && walked == 0 {
				t.Fatal("quotas are off but Usage did not walk files")
			}
			if mode != QuotaOff && walked != 0 {
				t.Fatalf("quotas are on (%s) but Usage walked files %d times", s.QuotaMode(), walked)
			}
			// This kernel has rsv_data: no filesystem-wide sync is needed.
			if synced := syncCount.Load() - syncs; synced != 0 {
				t.Fatalf("Usage/Commit synced the filesystem %d times", synced)
			}
		})
	}
}

func TestMaxSize(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	mounts, err := s.Prepare(ctx, "limited", "", snapshots.WithLabels(map[string]string{LabelMaxSize: "8MiB"}))
	if err != nil {
		t.Fatal(err)
	}
	limited := mountSnapshot(t, mounts)
	mounts, err = s.Prepare(ctx, "unlimited", "")
	if err != nil {
		t.Fatal(err)
	}
	unlimited := mountSnapshot(t, mounts)

	err = writeFile(filepath.Join(limited, "big"), 16*mib)
	if !errors.Is(err, unix.EDQUOT) && !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing 16 MiB into an 8 MiB snapshot: got %v, want EDQUOT or ENOSPC", err)
	}
	if err := writeFile(filepath.Join(limited, "small"), 1*mib); err != nil && !errors.Is(err, unix.EDQUOT) {
		t.Fatalf("limited snapshot broken beyond its quota: %v", err)
	}
	if err := writeFile(filepath.Join(unlimited, "big"), 16*mib); err != nil {
		t.Fatalf("a snapshot without max-size is affected by another's limit: %v", err)
	}
}

// baseAndContainer makes a committed layer "base" and an active "container" on it.
func baseAndContainer(t *testing.T, s *Snapshotter) {
	t.Helper()
	ctx := testContext(t)
	if _, err := s.Prepare(ctx, "base-active", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "base-active"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "container", "base"); err != nil {
		t.Fatal(err)
	}
}

func TestCleanupRemovesOnlyOrphans(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	baseAndContainer(t, s)
	known := readState(t, s)

	// Orphans as crashes leave them: subvolumes, a read-only one, a plain
	// directory, a subvolume with a nested subvolume inside, and a spare
	// nobody took.
	at := func(dir, name string) string { return filepath.Join(s.root, dir, name) }
	active, committed := at("active", "9001"), at("committed", "9002")
	for _, p := range []string{active, committed, at(spareDir, "1.dead.1")} {
		if err := btrfs.SubvolCreate(p); err != nil {
			t.Fatal(err)
		}
	}
	// "base" was committed where it was made, in active/; a copy of it
	// under committed/ (where older versions kept layers) is an orphan.
	base := snapshotDir(t, s, "base")
	if filepath.Base(filepath.Dir(base)) != "active" {
		t.Fatalf("base layer at %s, want it where it was made, in active/", base)
	}
	if err := btrfs.SubvolSnapshot(at("committed", filepath.Base(base)), base, true); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.SubvolSnapshot(at("view", "9003"), active, true); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.SubvolCreate(filepath.Join(committed, "nested")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(at("active", "9004"), "half-made"), 0o755); err != nil {
		t.Fatal(err)
	}
	if st := readState(t, s); st.consistent() {
		t.Fatal("orphans not visible in state")
	}
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if after := readState(t, s); !after.equal(known) {
		t.Fatalf("after Cleanup: %+v, want %+v", after, known)
	}
	for _, key := range []string{"base", "container"} {
		if _, err := s.Stat(ctx, key); err != nil {
			t.Fatalf("Cleanup lost %s: %v", key, err)
		}
	}
}

func TestBadInput(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	baseAndContainer(t, s)
	if _, err := s.View(ctx, "view", "base"); err != nil {
		t.Fatal(err)
	}
	before := readState(t, s)

	maxSize := func(v string) snapshots.Opt {
		return snapshots.WithLabels(map[string]string{LabelMaxSize: v})
	}
	for _, tc := range []struct {
		name string
		op   func() error
		want error
		msg  string
	}{
		{"unknown parent", func() error { _, err := s.Prepare(ctx, "x", "no-such-parent"); return err }, errdefs.ErrNotFound, "no-such-parent"},
		{"active parent", func() error { _, err := s.Prepare(ctx, "x", "container"); return err }, errdefs.ErrInvalidArgument, "container"},
		{"duplicate key", func() error { _, err := s.Prepare(ctx, "container", "base"); return err }, errdefs.ErrAlreadyExists, "container"},
		{"duplicate commit name", func() error { return s.Commit(ctx, "base", "container") }, errdefs.ErrAlreadyExists, "base"},
		{"remove with children", func() error { return s.Remove(ctx, "base") }, errdefs.ErrFailedPrecondition, "base"},
		{"commit a view", func() error { return s.Commit(ctx, "v-committed", "view") }, errdefs.ErrFailedPrecondition, "view"},
		{"commit a committed", func() error { return s.Commit(ctx, "b2", "base") }, errdefs.ErrFailedPrecondition, "base"},
		{"commit unknown", func() error { return s.Commit(ctx, "n", "no-such-key") }, errdefs.ErrNotFound, "no-such-key"},
		{"remove unknown", func() error { return s.Remove(ctx, "no-such-key") }, errdefs.ErrNotFound, "no-such-key"},
		{"dotdot key", func() error { _, err := s.Prepare(ctx, "../../etc", ""); return err }, errdefs.ErrInvalidArgument, ".."},
		{"dotdot inside key", func() error { _, err := s.Prepare(ctx, "default/1/../../x", "base"); return err }, errdefs.ErrInvalidArgument, ".."},
		{"absolute dotdot key", func() error { _, err := s.View(ctx, "/etc/../../passwd", "base"); return err }, errdefs.ErrInvalidArgument, ".."},
		{"dot key", func() error { _, err := s.View(ctx, "a/./b", "base"); return err }, errdefs.ErrInvalidArgument, `"."`},
		{"empty key", func() error { _, err := s.Prepare(ctx, "", ""); return err }, errdefs.ErrInvalidArgument, "empty"},
		{"NUL in key", func() error { _, err := s.Prepare(ctx, "a\x00b", ""); return err }, errdefs.ErrInvalidArgument, "control"},
		{"dotdot commit name", func() error { return s.Commit(ctx, "..", "container") }, errdefs.ErrInvalidArgument, ".."},
		{"max-size words", func() error { _, err := s.Prepare(ctx, "x", "", maxSize("ten megs")); return err }, errdefs.ErrInvalidArgument, "ten megs"},
		{"max-size negative", func() error { _, err := s.Prepare(ctx, "x", "", maxSize("-5")); return err }, errdefs.ErrInvalidArgument, "-5"},
		{"max-size zero", func() error { _, err := s.Prepare(ctx, "x", "base", maxSize("0")); return err }, errdefs.ErrInvalidArgument, "max-size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not name %q", err, tc.msg)
			}
			if after := readState(t, s); !after.equal(before) {
				t.Fatalf("state changed: %+v, was %+v", after, before)
			}
		})
	}
	// Commit failed for the active "container" above; it must still work.
	if err := s.Commit(ctx, "container-committed", "container"); err != nil {
		t.Fatalf("commit after rejected commits: %v", err)
	}
}

func TestRootNotBtrfs(t *testing.T) {
	needRoot(t)
	var st unix.Statfs_t
	dir := t.TempDir()
	if err := unix.Statfs(dir, &st); err != nil || st.Type == unix.BTRFS_SUPER_MAGIC {
		t.Fatalf("temp dir %s must not be on btrfs for this test (statfs %v)", dir, err)
	}
	root := filepath.Join(dir, "root", "sub")
	_, err := NewSnapshotter(testContext(t), root)
	if _, serr := os.Stat(filepath.Join(dir, "root")); serr == nil {
		t.Errorf("refused root %s was created anyway", root)
	}
	if err == nil || !strings.Contains(err.Error(), "not btrfs") || !strings.Contains(err.Error(), "hack/btrfs-loop.sh") {
		t.Fatalf("want an error saying the root is not btrfs and how to make one, got %v", err)
	}
}

func TestSecondInstanceRefused(t *testing.T) {
	s := newTestSnapshotter(t)
	_, err := NewSnapshotter(testContext(t), s.root)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second snapshotter on %s: got %v", s.root, err)
	}
	s.Close()
	s2, err := NewSnapshotter(testContext(t), s.root)
	if err != nil {
		t.Fatalf("reopening after Close: %v", err)
	}
	s2.Close()
}

func TestMaxSizeNeedsQuotas(t *testing.T) {
	s := newTestSnapshotter(t, WithQuotaMode(QuotaOff))
	_, err := s.Prepare(testContext(t), "x", "", snapshots.WithLabels(map[string]string{LabelMaxSize: "1GiB"}))
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "quotas") {
		t.Fatalf("max-size with quotas off: got %v", err)
	}
	if st := readState(t, s); len(st.known) != 0 || len(st.onDisk) != 0 {
		t.Fatalf("refused Prepare left %+v", st)
	}
}

// A snapshotter that never held a snapshot walks nothing, without error;
// an error from the walk function still comes back.
func TestWalkEmpty(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	calls := 0
	if err := s.Walk(ctx, func(context.Context, snapshots.Info) error { calls++; return nil }); err != nil || calls != 0 {
		t.Fatalf("Walk on an empty store: %v, %d calls", err, calls)
	}
	baseAndContainer(t, s)
	err := s.Walk(ctx, func(context.Context, snapshots.Info) error { return errdefs.ErrNotFound })
	if !errdefs.IsNotFound(err) {
		t.Fatalf("the walk function's NotFound was swallowed: %v", err)
	}
}

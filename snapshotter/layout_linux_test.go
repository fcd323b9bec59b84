package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/btrfs/v2"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"golang.org/x/sys/unix"
)

// TestViewsShareTheirParent: a view of a committed snapshot is a read-only
// mount of its parent's subvolume, with no subvolume of its own; a view
// without parent is an empty subvolume of its own.
func TestViewsShareTheirParent(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	mounts, err := s.Prepare(ctx, "base-active", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mounts[0].Source, "f"), []byte("base"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "base-active"); err != nil {
		t.Fatal(err)
	}
	before := readState(t, s)

	mounts, err = s.View(ctx, "view", "base")
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].Source != snapshotDir(t, s, "base") || !hasOption(mounts[0].Options, "ro") {
		t.Fatalf("view mounts %+v, want a read-only bind of %s", mounts, snapshotDir(t, s, "base"))
	}
	if again, err := s.Mounts(ctx, "view"); err != nil || again[0].Source != mounts[0].Source {
		t.Fatalf("Mounts of the view: %+v %v", again, err)
	}
	if after := readState(t, s); !after.equal(before) {
		t.Fatalf("a view made a subvolume: %+v, was %+v", after, before)
	}
	dir := mountSnapshot(t, mounts)
	if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != "base" {
		t.Fatalf("the view lacks its parent's file: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("writing into the view: %v, want EROFS", err)
	}
	unmountRetry(t, dir)
	if err := s.Remove(ctx, "view"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(snapshotDir(t, s, "base"), "f")); err != nil || string(b) != "base" {
		t.Fatalf("removing the view hurt its parent: %q %v", b, err)
	}

	mounts, err = s.View(ctx, "empty-view", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := btrfs.IsSubvolume(mounts[0].Source); err != nil || !strings.HasPrefix(mounts[0].Source, filepath.Join(s.root, "view")+"/") {
		t.Fatalf("a view without parent is %s (%v), want a subvolume in view/", mounts[0].Source, err)
	}
	if st := readState(t, s); !st.consistent() {
		t.Fatalf("metadata and subvolumes disagree: %+v", st)
	}
}

func hasOption(options []string, o string) bool {
	for _, x := range options {
		if x == o {
			return true
		}
	}
	return false
}

// TestCommitInPlace: the committed snapshot is the active snapshot's
// subvolume, marked read-only once the sealer ran.
func TestCommitInPlace(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	mounts, err := s.Prepare(ctx, "layer-active", "")
	if err != nil {
		t.Fatal(err)
	}
	active := mounts[0].Source
	if err := os.WriteFile(filepath.Join(active, "f"), []byte("layer"), 0o644); err != nil {
		t.Fatal(err)
	}
	id, err := btrfs.SubvolID(active)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "layer", "layer-active"); err != nil {
		t.Fatal(err)
	}
	s.sealer.flush()
	dir := snapshotDir(t, s, "layer")
	if got, err := btrfs.SubvolID(dir); dir != active || err != nil || got != id {
		t.Fatalf("committed layer is %s (subvolume %d, %v), want %s (subvolume %d)", dir, got, err, active, id)
	}
	if ro, err := readOnly(dir); err != nil || !ro {
		t.Fatalf("committed layer read-only: %v %v", ro, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("writing into the committed layer: %v, want EROFS", err)
	}
	if _, err := s.Prepare(ctx, "container", "layer"); err != nil {
		t.Fatal(err)
	}
	if st := readState(t, s); !st.consistent() {
		t.Fatalf("metadata and subvolumes disagree: %+v", st)
	}
}

// TestOlderLayout: a root written by an earlier version (no location
// records; layers moved to committed/<id>, views their own subvolumes in
// view/<id>) keeps working: mounts, new snapshots, commit, removal and
// Cleanup find every subvolume where it is.
func TestOlderLayout(t *testing.T) {
	root := filepath.Join(newBtrfs(t, 256<<20), "root")
	ctx := testContext(t)
	ids := olderRoot(t, ctx, root)

	s, err := NewSnapshotter(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if st := readState(t, s); !st.consistent() || len(st.known) != 3 {
		t.Fatalf("older root: %+v, want its 3 subvolumes known", st)
	}
	for key, want := range map[string]string{"view": "view/" + ids["view"], "container": "active/" + ids["container"]} {
		mounts, err := s.Mounts(ctx, key)
		if err != nil || mounts[0].Source != filepath.Join(root, want) {
			t.Fatalf("Mounts(%s) = %+v, %v; want %s", key, mounts, err, want)
		}
		if b, err := os.ReadFile(filepath.Join(mounts[0].Source, "old")); err != nil || string(b) != "old" {
			t.Fatalf("%s lacks the layer's file: %q %v", key, b, err)
		}
	}
	mounts, err := s.Prepare(ctx, "new", "layer")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mounts[0].Source, "old")); err != nil || string(b) != "old" {
		t.Fatalf("a new snapshot of the older layer: %q %v", b, err)
	}
	if err := s.Commit(ctx, "container-layer", "container"); err != nil {
		t.Fatal(err)
	}
	if dir := snapshotDir(t, s, "container-layer"); dir != filepath.Join(root, "active", ids["container"]) {
		t.Fatalf("older active snapshot committed at %s", dir)
	}
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"new", "container-layer", "view", "layer"} {
		if err := s.Remove(ctx, k); err != nil {
			t.Fatalf("remove %s: %v", k, err)
		}
	}
	if st := readState(t, s); len(st.known) != 0 || len(st.onDisk) != 0 {
		t.Fatalf("left after removing everything: %+v", st)
	}
}

// olderRoot lays out what an earlier version left: a committed layer with
// a file "old", a view and an active snapshot of it. It returns their ids.
func olderRoot(t *testing.T, ctx context.Context, root string) map[string]string {
	t.Helper()
	for _, d := range []string{"active", "view", "committed", spareDir} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	ids := map[string]string{}
	at := func(kind snapshots.Kind, id string) string { return filepath.Join(root, kindDirs[kind], id) }
	err = ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		a, err := storage.CreateSnapshot(ctx, snapshots.KindActive, "layer-active", "")
		if err != nil {
			return err
		}
		if err := btrfs.SubvolCreate(at(snapshots.KindActive, a.ID)); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(at(snapshots.KindActive, a.ID), "old"), []byte("old"), 0o644); err != nil {
			return err
		}
		if ids["layer"], err = storage.CommitActive(ctx, "layer-active", "layer", snapshots.Usage{}); err != nil {
			return err
		}
		if err := btrfs.SubvolSnapshot(at(snapshots.KindCommitted, a.ID), at(snapshots.KindActive, a.ID), true); err != nil {
			return err
		}
		if err := btrfs.SubvolDelete(at(snapshots.KindActive, a.ID)); err != nil {
			return err
		}
		for key, kind := range map[string]snapshots.Kind{"view": snapshots.KindView, "container": snapshots.KindActive} {
			snap, err := storage.CreateSnapshot(ctx, kind, key, "layer")
			if err != nil {
				return err
			}
			ids[key] = snap.ID
			if err := btrfs.SubvolSnapshot(at(kind, snap.ID), at(snapshots.KindCommitted, a.ID), kind == snapshots.KindView); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestNewSubvolumeOnDisk: Prepare without a parent commits a btrfs
// transaction after making its subvolume, before it commits the metadata
// that names it, so that a power loss cannot keep the one without the
// other. (btrfs counts its commits in sysfs; nothing else writes to this
// filesystem meanwhile.)
func TestNewSubvolumeOnDisk(t *testing.T) {
	s := newTestSnapshotter(t)
	uuid, err := filesystemUUID(s.root)
	if err != nil {
		t.Fatal(err)
	}
	commits := func() int {
		b, err := os.ReadFile(filepath.Join("/sys/fs/btrfs", uuid, "commit_stats"))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if _, err := fmt.Sscanf(string(b), "commits %d", &n); err != nil {
			t.Fatalf("commit_stats %q: %v", b, err)
		}
		return n
	}
	before := commits()
	if _, err := s.Prepare(testContext(t), "empty", ""); err != nil {
		t.Fatal(err)
	}
	if commits() == before {
		t.Fatal("Prepare without parent committed no btrfs transaction")
	}
}

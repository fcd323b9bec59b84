package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/btrfs/v2"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
)

// spareFiles lists what is in the spare directory.
func spareFiles(t *testing.T, s *Snapshotter) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.root, spareDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func waitSpares(t *testing.T, s *Snapshotter, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := spareFiles(t, s)
		if len(got) == n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("spares %v, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSpares: from the second active snapshot of a parent on, a writable
// snapshot of it is made ahead of time; the next Prepare renames it into
// place, with the parent's content, writable and independent of its
// siblings. Removing the parent deletes its spare, and so does Close.
func TestSpares(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	mounts, err := s.Prepare(ctx, "base-active", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mountSnapshot(t, mounts), "from-base"), []byte("base"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "base-active"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "c1", "base"); err != nil {
		t.Fatal(err)
	}
	s.spares.wg.Wait() // a spare, had Prepare started one, is on disk now
	if got := spareFiles(t, s); len(got) != 0 {
		t.Fatalf("a spare after the first active child: %v", got)
	}
	if _, err := s.View(ctx, "v1", "base"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "c2", "base"); err != nil {
		t.Fatal(err)
	}
	spare := waitSpares(t, s, 1)[0]
	spareID, err := btrfs.SubvolID(filepath.Join(s.root, spareDir, spare))
	if err != nil {
		t.Fatal(err)
	}

	mounts, err = s.Prepare(ctx, "c3", "base")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ctx, "c3")
	if err != nil || info.Kind != snapshots.KindActive || info.Parent != "base" {
		t.Fatalf("c3: %+v %v", info, err)
	}
	var snap string
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		snap, _, _, err = storage.GetInfo(ctx, "c3")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := btrfs.SubvolID(s.path(snapshots.KindActive, snap)); err != nil || id != spareID {
		t.Fatalf("c3 is subvolume %d (%v), not the spare %d", id, err, spareID)
	}
	c3 := mountSnapshot(t, mounts)
	if b, err := os.ReadFile(filepath.Join(c3, "from-base")); err != nil || string(b) != "base" {
		t.Fatalf("c3 lacks the parent's file: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(c3, "only-c3"), []byte("x"), 0o644); err != nil {
		t.Fatalf("c3 is not writable: %v", err)
	}
	mounts, err = s.Mounts(ctx, "c2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mountSnapshot(t, mounts), "only-c3")); err == nil {
		t.Fatal("a write to c3 shows in c2")
	}
	// c3 took the spare; the next one is made.
	if next := waitSpares(t, s, 1)[0]; next == spare {
		t.Fatalf("spare %s was not replaced", spare)
	}

	// Removing the parent (after its children) deletes its spare.
	for _, k := range []string{"c1", "c2", "c3", "v1", "base"} {
		if err := s.Remove(ctx, k); err != nil {
			t.Fatalf("remove %s: %v", k, err)
		}
	}
	waitSpares(t, s, 0)
}

// TestSparesGoWithClose: Close deletes the spares it made.
func TestSparesGoWithClose(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	baseAndContainer(t, s)
	if _, err := s.Prepare(ctx, "container2", "base"); err != nil {
		t.Fatal(err)
	}
	waitSpares(t, s, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := spareFiles(t, s); len(got) != 0 {
		t.Fatalf("spares left after Close: %v", got)
	}
}

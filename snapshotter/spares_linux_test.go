package snapshotter

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/btrfs/v2"
	"github.com/containerd/containerd/v2/core/snapshots"
)

// idle returns once no spare is waiting to be made or being made.
func (p *spares) idle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.pending) > 0 || len(p.making) > 0 {
		p.changed.Wait()
	}
}

// freeSpares waits until no spare is being made and lists the free ones:
// what is in spare/ and no snapshot's subvolume.
func freeSpares(t *testing.T, s *Snapshotter) []string {
	t.Helper()
	s.spares.idle()
	known := map[string]bool{}
	for _, p := range readState(t, s).known {
		known[p] = true
	}
	entries, err := os.ReadDir(filepath.Join(s.root, spareDir))
	if err != nil {
		t.Fatal(err)
	}
	var free []string
	for _, e := range entries {
		if p := filepath.Join(s.root, spareDir, e.Name()); !known[p] {
			free = append(free, p)
		}
	}
	return free
}

func wantSpares(t *testing.T, s *Snapshotter, n int) []string {
	t.Helper()
	got := freeSpares(t, s)
	if len(got) != n {
		t.Fatalf("free spares %v, want %d", got, n)
	}
	return got
}

// TestSpares: from the second active snapshot of a parent on, a writable
// snapshot of it is made ahead of time; the next Prepare takes it where it
// is, with the parent's content, writable and independent of its
// siblings. Removing the parent deletes its spare.
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
	wantSpares(t, s, 0) // not after the first active child
	if _, err := s.View(ctx, "v1", "base"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "c2", "base"); err != nil {
		t.Fatal(err)
	}
	spare := wantSpares(t, s, 1)[0]
	spareID, err := btrfs.SubvolID(spare)
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
	if dir := snapshotDir(t, s, "c3"); dir != spare || mounts[0].Source != spare {
		t.Fatalf("c3 is %s, mounted from %s, not the spare %s", dir, mounts[0].Source, spare)
	}
	if id, err := btrfs.SubvolID(spare); err != nil || id != spareID {
		t.Fatalf("c3's subvolume is %d (%v), not the spare %d", id, err, spareID)
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
	if next := wantSpares(t, s, 1)[0]; next == spare {
		t.Fatalf("spare %s was not replaced", spare)
	}
	if st := readState(t, s); !st.consistent() {
		t.Fatalf("metadata and subvolumes disagree: %+v", st)
	}

	// Removing c3 deletes the subvolume it took; removing the parent
	// (after its children) deletes its spare.
	for _, k := range []string{"c1", "c2", "c3", "v1", "base"} {
		if err := s.Remove(ctx, k); err != nil {
			t.Fatalf("remove %s: %v", k, err)
		}
	}
	if got, _ := os.ReadDir(filepath.Join(s.root, spareDir)); len(got) != 0 {
		t.Fatalf("spare/ after removing everything: %v", got)
	}
}

// TestSparesAcrossRestart: Close deletes the free spares, not the ones
// containers took; a restart keeps those and their content.
func TestSparesAcrossRestart(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	baseAndContainer(t, s)
	if _, err := s.Prepare(ctx, "container2", "base"); err != nil {
		t.Fatal(err)
	}
	wantSpares(t, s, 1)
	mounts, err := s.Prepare(ctx, "container3", "base")
	if err != nil {
		t.Fatal(err)
	}
	taken := mounts[0].Source
	if err := os.WriteFile(filepath.Join(taken, "mine"), []byte("3"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantSpares(t, s, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(s.root, spareDir))
	if err != nil || len(entries) != 1 || filepath.Join(s.root, spareDir, entries[0].Name()) != taken {
		t.Fatalf("spare/ after Close: %v (%v), want only container3's %s", entries, err, taken)
	}

	s, err = NewSnapshotter(ctx, s.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if b, err := os.ReadFile(filepath.Join(snapshotDir(t, s, "container3"), "mine")); err != nil || string(b) != "3" {
		t.Fatalf("container3 after a restart: %q %v", b, err)
	}
	if st := readState(t, s); !st.consistent() {
		t.Fatalf("metadata and subvolumes disagree after a restart: %+v", st)
	}
}

// TestSpareNotStartedYet: a Prepare that comes before its parent's spare
// is started makes a snapshot of its own rather than waiting for one, and
// Close gives up a spare that was never started.
func TestSpareNotStartedYet(t *testing.T) {
	s := newTestSnapshotter(t)
	s.spares.delay = time.Hour // not started within the test
	ctx := testContext(t)
	baseAndContainer(t, s)
	if _, err := s.Prepare(ctx, "container2", "base"); err != nil {
		t.Fatal(err)
	}
	if n := pendingSpares(s); n != 1 {
		t.Fatalf("%d spares waiting after the second child, want 1", n)
	}
	// Waiting for the spare would take the hour.
	mounts, err := s.Prepare(ctx, "container3", "base")
	if err != nil {
		t.Fatal(err)
	}
	if dir := filepath.Dir(mounts[0].Source); dir == filepath.Join(s.root, spareDir) {
		t.Fatalf("container3 got %s from spare/, which holds no spare yet", mounts[0].Source)
	}
	if n := pendingSpares(s); n != 1 {
		t.Fatalf("%d spares waiting after the third child, want 1 (the next)", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := pendingSpares(s); n != 0 {
		t.Fatalf("%d spares waiting after Close", n)
	}
	if got, _ := os.ReadDir(filepath.Join(s.root, spareDir)); len(got) != 0 {
		t.Fatalf("spare/ after Close: %v", got)
	}
}

func pendingSpares(s *Snapshotter) int {
	s.spares.mu.Lock()
	defer s.spares.mu.Unlock()
	return len(s.spares.pending)
}

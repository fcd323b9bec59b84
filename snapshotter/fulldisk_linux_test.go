package snapshotter

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"golang.org/x/sys/unix"
)

// TestFullDisk fills a small btrfs from inside a container's snapshot: the
// write fails with ENOSPC, the snapshotter keeps serving (and what it
// cannot do fails with a clear error and changes nothing), removing the
// filler frees the space so work continues, and the metadata survives a
// reopen intact.
func TestFullDisk(t *testing.T) {
	fs := newBtrfs(t, 160<<20)
	root := filepath.Join(fs, "root")
	ctx := testContext(t)
	s, err := NewSnapshotter(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	baseAndContainer(t, s)

	mounts, err := s.Prepare(ctx, "filler", "base")
	if err != nil {
		t.Fatal(err)
	}
	dir := mountSnapshot(t, mounts)
	fillDisk(t, dir)

	// Still serving: reads work; a new snapshot either works or fails
	// saying why, and leaves metadata and subvolumes in agreement.
	if _, err := s.Stat(ctx, "base"); err != nil {
		t.Fatalf("Stat on a full disk: %v", err)
	}
	if u, err := s.Usage(ctx, "filler"); err != nil || u.Size < 8*mib {
		t.Fatalf("Usage on a full disk: %+v %v", u, err)
	}
	if _, err := s.Prepare(ctx, "while-full", "base"); err != nil && !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Prepare on a full disk failed without saying so: %v", err)
	}
	if st := readState(t, s); !st.consistent() {
		t.Fatalf("full disk left metadata and subvolumes disagreeing: %+v", st)
	}

	// Freeing space lets work continue (btrfs frees a deleted subvolume's
	// extents in the background).
	unmountRetry(t, dir)
	if err := s.Remove(ctx, "filler"); err != nil {
		t.Fatalf("Remove on a full disk: %v", err)
	}
	s.Remove(ctx, "while-full")
	workAfterFreeing(t, s, root)

	// The metadata is intact after a reopen.
	s.Close()
	if s, err = NewSnapshotter(ctx, root); err != nil {
		t.Fatalf("reopening after a full disk: %v", err)
	}
	var kinds []string
	if err := s.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		kinds = append(kinds, i.Name+":"+i.Kind.String())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if st := readState(t, s); !st.consistent() || len(kinds) != 3 {
		t.Fatalf("after reopen: %v, state %+v", kinds, st)
	}
	if st, err := os.Stat(s.reservePath()); err != nil || st.Size() != reserveSize {
		t.Fatalf("the disk-full reserve was not set aside again once space was back: %v", err)
	}
}

// fillDisk writes 8 MiB files into dir until the filesystem is full, and
// fails the test unless that ends in ENOSPC.
func fillDisk(t *testing.T, dir string) {
	t.Helper()
	var err error
	for i := 0; err == nil && i < 400; i++ {
		err = writeFile(filepath.Join(dir, "fill-"+string(rune('a'+i%26))+string(rune('a'+i/26))), 8*mib)
	}
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filling the disk: got %v, want ENOSPC", err)
	}
}

// workAfterFreeing checks that a snapshot can be prepared and written
// again once space was freed; btrfs frees a deleted subvolume's extents in
// the background, so it tries until that succeeds, for up to 30 s.
func workAfterFreeing(t *testing.T, s *Snapshotter, root string) {
	t.Helper()
	ctx := testContext(t)
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		syncFilesystem(root)
		var m []mount.Mount
		if m, err = s.Prepare(ctx, "after", "base"); err != nil {
			continue
		}
		d := mountSnapshot(t, m)
		if err = writeFile(filepath.Join(d, "ok"), 8*mib); err == nil {
			return
		}
		unmountRetry(t, d)
		s.Remove(ctx, "after")
	}
	t.Fatalf("no work possible after freeing space: %v", err)
}

// TestReopenOnFullDisk: a snapshotter stopped while the disk is full opens
// again (its metadata copy and journal need room: the reserve gives it),
// with what it had, and can then free space.
func TestReopenOnFullDisk(t *testing.T) {
	fs := newBtrfs(t, 160<<20)
	root := filepath.Join(fs, "root")
	ctx := testContext(t)
	s := openRoot(t, ctx, root)
	baseAndContainer(t, s)
	mounts, err := s.Prepare(ctx, "filler", "base")
	if err != nil {
		t.Fatal(err)
	}
	dir := mountSnapshot(t, mounts)
	fillDisk(t, dir)
	s.Close() // its checkpoint may fail for want of space; the journal stays

	s = openRoot(t, ctx, root)
	for _, k := range []string{"base", "filler"} {
		if _, err := s.Stat(ctx, k); err != nil {
			t.Fatalf("%s after reopening on a full disk: %v", k, err)
		}
	}
	unmountRetry(t, dir)
	if err := s.Remove(ctx, "filler"); err != nil {
		t.Fatalf("Remove after reopening on a full disk: %v", err)
	}
	workAfterFreeing(t, s, root)
}

package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/log/logtest"
	bolt "go.etcd.io/bbolt"

	"github.com/tupper/tupper/internal/testutil"
)

var (
	needRoot     = testutil.NeedRoot
	newBtrfs     = testutil.NewBtrfs
	mountBtrfs   = testutil.MountBtrfs
	unmountRetry = testutil.Unmount
)

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
	err := s.withTx(testContext(t), false, func(ctx context.Context, tx *bolt.Tx) error {
		m, err := s.knownPaths(ctx, tx)
		for p := range m {
			st.known = append(st.known, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range subvolumeDirs() {
		entries, err := os.ReadDir(filepath.Join(s.root, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := filepath.Join(s.root, dir, e.Name())
			if dir != spareDir || !s.spares.free(p) {
				st.onDisk = append(st.onDisk, p)
			}
		}
	}
	sort.Strings(st.known)
	sort.Strings(st.onDisk)
	return st
}

// snapshotDir is the subvolume that holds the files of the snapshot key,
// whatever its kind.
func snapshotDir(t testing.TB, s *Snapshotter, key string) string {
	t.Helper()
	var dir string
	err := s.withTx(testContext(t), false, func(ctx context.Context, tx *bolt.Tx) error {
		id, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		var parents []string
		if info.Kind == snapshots.KindView && info.Parent != "" {
			pid, _, _, err := storage.GetInfo(ctx, info.Parent)
			if err != nil {
				return err
			}
			parents = []string{pid}
		}
		dir, err = s.subvolumePath(tx, info.Kind, id, parents)
		return err
	})
	if err != nil {
		t.Fatalf("subvolume of %s: %v", key, err)
	}
	return dir
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

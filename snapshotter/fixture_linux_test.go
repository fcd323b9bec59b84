package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/containerd/log/logtest"

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

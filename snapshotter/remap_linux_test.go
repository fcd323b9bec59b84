package snapshotter

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

var idmapLabels = snapshots.WithLabels(map[string]string{
	snapshots.LabelSnapshotUIDMapping: "0:100000:65536",
	snapshots.LabelSnapshotGIDMapping: "0:200000:65536",
})

// With remap-ids, a snapshot labelled with a mapping mounts as an idmapped
// bind mount: files owned by 0 and 1000 on disk show as the mapped ids, and
// nothing on disk was chowned.
func TestRemapIDs(t *testing.T) {
	// Shared, as systemd makes every mount: the idmapped clone containerd
	// stacks on a snapshot's bind must not propagate onto the snapshot.
	fs := newBtrfs(t, 256<<20)
	if err := syscall.Mount("", fs, "", syscall.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	s, err := NewSnapshotter(testContext(t), filepath.Join(fs, "root"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := testContext(t)
	mounts, err := s.Prepare(ctx, "userns", "", idmapLabels)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(mounts[0].Options, "uidmap=0:100000:65536") || !slices.Contains(mounts[0].Options, "gidmap=0:200000:65536") {
		t.Fatalf("mount options lack the id maps: %v", mounts[0].Options)
	}
	again, err := s.Mounts(ctx, "userns")
	if err != nil || !slices.Equal(again[0].Options, mounts[0].Options) {
		t.Fatalf("Mounts disagrees with Prepare: %v %v", again, err)
	}
	onDisk := mounts[0].Source
	for name, id := range map[string]int{"root-file": 0, "user-file": 1000} {
		p := filepath.Join(onDisk, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, id, id); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatalf("idmapped mount: %v", err)
	}
	defer unmountRetry(t, dir)
	for name, want := range map[string][2]uint32{"root-file": {100000, 200000}, "user-file": {101000, 201000}} {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s through the idmapped mount: %d:%d, want %d:%d", name, st.Uid, st.Gid, want[0], want[1])
		}
		if err := syscall.Stat(filepath.Join(onDisk, name), &st); err != nil || (st.Uid != 0 && st.Uid != 1000) {
			t.Errorf("%s was chowned on disk: %d", name, st.Uid)
		}
	}

	// When containerd chowns itself (no remap-ids capability), the labels
	// still arrive and must not be mapped a second time.
	plain := newTestSnapshotter(t, WithRemapIDs(false))
	mounts, err = plain.Prepare(ctx, "userns", "", idmapLabels)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range mounts[0].Options {
		if strings.HasPrefix(o, "uidmap=") || strings.HasPrefix(o, "gidmap=") {
			t.Fatalf("remap-ids off but mount has %s", o)
		}
	}
}

func TestBadIDMapLabels(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	for _, labels := range []map[string]string{
		{snapshots.LabelSnapshotUIDMapping: "0:100000:65536"},
		{snapshots.LabelSnapshotUIDMapping: "0:100000", snapshots.LabelSnapshotGIDMapping: "0:100000:65536"},
		{snapshots.LabelSnapshotUIDMapping: "0:100000:65536", snapshots.LabelSnapshotGIDMapping: "a:b:c"},
		{snapshots.LabelSnapshotUIDMapping: "0:100000:0", snapshots.LabelSnapshotGIDMapping: "0:100000:65536"},
		{snapshots.LabelSnapshotUIDMapping: "0:100000:65536,x", snapshots.LabelSnapshotGIDMapping: "0:100000:65536"},
	} {
		_, err := s.Prepare(ctx, "bad", "", snapshots.WithLabels(labels))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "containerd.io/snapshot/") {
			t.Errorf("%v: got %v, want an invalid-argument error naming the label", labels, err)
		}
	}
	if st := readState(t, s); len(st.known) != 0 || len(st.onDisk) != 0 {
		t.Fatalf("rejected Prepares left %+v", st)
	}
}

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/testutil"
)

// TestSnapshotter imports the multi-layer test image into the snapshotter,
// checks the rootfs a container sees against hack/mkimage/layers-rootfs.txt,
// checks that a container's writes stay in its own snapshot, and that
// removing the image leaves no snapshot, subvolume or mount behind.
func TestSnapshotter(t *testing.T) {
	e := NewEnv(t)
	sn := "--snapshotter=" + e.Snapshotter

	exps, err := loadExpectations("../hack/mkimage/layers-rootfs.txt")
	if err != nil {
		t.Fatal(err)
	}
	image := e.importImage("layers")
	if !strings.Contains(e.MustCtr("images", "ls", "-q"), image) {
		t.Fatalf("%s not in `ctr images ls` after import", image)
	}

	// The transfer service must have unpacked the layers at import time
	// (unpack_config): 4 layers, 4 committed snapshots.
	snaps := snapshotLines(e.MustCtr("snapshots", sn, "ls"))
	if len(snaps) != 4 {
		t.Errorf("after import: %d snapshots, want 4 committed (one per layer; is unpack_config set?):\n%s", len(snaps), strings.Join(snaps, "\n"))
	}
	for _, s := range snaps {
		if !strings.HasSuffix(s, "Committed") {
			t.Errorf("after import: snapshot not committed: %s", s)
		}
	}

	t.Run("rootfs", func(t *testing.T) {
		e := e.For(t)
		id := uniqueID("rootfs")
		out := e.MustCtr("run", "--rm", sn, image, id, "/bin/sh", "-c", probeScript(exps))
		recs, err := parseProbe(out)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, msg := range compareRootfs(exps, recs) {
			t.Error(msg)
		}
	})

	t.Run("users", func(t *testing.T) {
		e := e.For(t)
		out := e.MustCtr("run", "--rm", sn, image, uniqueID("users"), "/bin/sh", "-c",
			"id -u tupper; id -g tupper; stat -c %a /tmp")
		if got := strings.Fields(out); strings.Join(got, " ") != "1000 1000 1777" {
			t.Errorf("id -u/-g tupper, stat /tmp: got %q, want 1000 1000 1777", out)
		}
	})

	t.Run("writes-stay-in-container", func(t *testing.T) { checkWritesStay(e.For(t), sn, image) })
	t.Run("remove", func(t *testing.T) { checkRemoveLeavesNothing(e.For(t), sn, image) })
}

// checkWritesStay writes, deletes and chmods in one container; a second
// container from the same image must see the image unchanged.
func checkWritesStay(e *Env, sn, image string) {
	t := e.t
	e.MustCtr("run", "--rm", sn, image, uniqueID("write"), "/bin/sh", "-c",
		"set -e; echo x > /data/written; rm /data/hard/link; rm -r /data/opaque; "+
			"echo v3 > /data/modified; chmod 700 /data/modes/ro; chown 5:5 /data/added; "+
			"echo big > /data/hard/orig; ls /data >/dev/null")
	out := e.MustCtr("run", "--rm", sn, image, uniqueID("read"), "/bin/sh", "-c",
		"ls -A /data | tr '\\n' ' '; echo; cat /data/modified /data/hard/orig; "+
			"stat -c '%a %u:%g %h' /data/modes/ro /data/added /data/hard/orig")
	want := "added hard hard-too modes modified opaque owned recreated sym whiteout \n" +
		"v2\nhardlink-data\n444 0:0 1\n644 0:0 1\n644 0:0 3\n"
	if out != want {
		t.Errorf("second container sees the first one's writes:\n got: %q\nwant: %q", out, want)
	}
}

// checkRemoveLeavesNothing removes the image: no container, snapshot,
// subvolume or mount may be left.
func checkRemoveLeavesNothing(e *Env, sn, image string) {
	t := e.t
	if out, err := e.Ctr("containers", "ls", "-q"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("containers left after ctr run --rm: %q %v", out, err)
	}
	e.MustCtr("images", "rm", "--sync", image)
	if snaps := snapshotLines(e.MustCtr("snapshots", sn, "ls")); len(snaps) != 0 {
		t.Errorf("snapshots left after `ctr images rm --sync`:\n%s", strings.Join(snaps, "\n"))
	}
	// containerd's garbage collector removes the snapshots from the
	// snapshotter before `images rm --sync` returns; the snapshotter
	// may delete the subvolumes asynchronously.
	if subs := e.waitNoSubvolumes(10 * time.Second); len(subs) != 0 {
		t.Errorf("btrfs subvolumes left under %s:\n%s", e.SnapshotterRoot, strings.Join(subs, "\n"))
	}
	mps, err := testutil.MountsUnder(e.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var leaked []string
	for _, mp := range mps {
		if mp != e.SnapshotterRoot {
			leaked = append(leaked, mp)
		}
	}
	if len(leaked) != 0 {
		t.Errorf("mounts left under %s:\n%s", e.Dir, strings.Join(leaked, "\n"))
	}
}

// snapshotLines returns the rows of `ctr snapshots ls` without the header.
func snapshotLines(out string) []string {
	var rows []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "KEY") {
			continue
		}
		rows = append(rows, l)
	}
	return rows
}

// uniqueID names a container uniquely within this process and run.
func uniqueID(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
}

// TestSnapshotterRestart checks that snapshots survive a restart of the
// snapshotter daemon: an image unpacked before the restart runs after it,
// and is removed cleanly.
func TestSnapshotterRestart(t *testing.T) {
	e := NewEnv(t)
	e.requireTupper() // the built-in snapshotter has no daemon to restart
	sn := "--snapshotter=" + e.Snapshotter
	image := e.importImage("busybox")
	before := snapshotLines(e.MustCtr("snapshots", sn, "ls"))
	if len(before) != 1 {
		t.Fatalf("after import: %d snapshots, want 1:\n%s", len(before), strings.Join(before, "\n"))
	}

	e.RestartSnapshotter()

	after := snapshotLines(e.MustCtr("snapshots", sn, "ls"))
	if strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("snapshots changed across a restart:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	out := e.MustCtr("run", "--rm", sn, image, uniqueID("restart"), "/bin/sh", "-c", "echo ok > /tmp/x && cat /tmp/x")
	if strings.TrimSpace(out) != "ok" {
		t.Errorf("container after restart: %q, want ok", out)
	}
	e.MustCtr("images", "rm", "--sync", image)
	if snaps := snapshotLines(e.MustCtr("snapshots", sn, "ls")); len(snaps) != 0 {
		t.Errorf("snapshots left after `ctr images rm --sync`:\n%s", strings.Join(snaps, "\n"))
	}
}

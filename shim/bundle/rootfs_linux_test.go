package bundle

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tupper/tupper/internal/testutil"
	"golang.org/x/sys/unix"
)

// A rootfs with a submount comes off whole; one that something still
// holds is detached (so nothing stays mounted), and the caller hears that
// the plain unmount did not do it.
func TestUnmountRootfs(t *testing.T) {
	testutil.NeedRoot(t)
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	mountTmpfs := func() {
		t.Helper()
		os.MkdirAll(rootfs, 0o755)
		if err := unix.Mount("tmpfs", rootfs, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(rootfs, "proc"), 0o755)
		if err := unix.Mount("tmpfs", filepath.Join(rootfs, "proc"), "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	left := func() []string {
		ms, err := testutil.MountsUnder(dir)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	t.Cleanup(func() {
		for range left() {
			unix.Unmount(rootfs, unix.MNT_DETACH)
		}
	})

	mountTmpfs()
	if !UnmountRootfs(context.Background(), rootfs) {
		t.Error("an idle rootfs was not unmounted plainly")
	}
	if ms := left(); len(ms) != 0 {
		t.Fatalf("still mounted: %v", ms)
	}

	mountTmpfs()
	f, err := os.Create(filepath.Join(rootfs, "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if UnmountRootfs(context.Background(), rootfs) {
		t.Error("a held rootfs reported as plainly unmounted")
	}
	if ms := left(); len(ms) != 0 {
		t.Fatalf("a held rootfs is still mounted: %v", ms)
	}
}

package container

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHelperBinarySealed: a helper's binary, as /proc/<pid>/exe shows it
// to anyone who may look, cannot be opened for writing (CVE-2019-5736):
// it is this binary through a read-only overlay, not the file on disk.
func TestHelperBinarySealed(t *testing.T) {
	needRoot(t)
	r, err := create(t, newBundle(t), testSpec("true"))
	if err != nil {
		t.Fatal(err)
	}
	exe := fmt.Sprintf("/proc/%d/exe", r.c.Pid())
	link, err := os.Readlink(exe)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Readlink("/proc/self/exe")
	if link == self {
		t.Errorf("the helper runs %s itself, not a sealed view of it", link)
	}
	if strings.HasPrefix(link, "/memfd:") {
		t.Errorf("overlayfs sealing is unavailable here; the helper binary is a memfd copy (%s)", link)
	}
	f, err := os.OpenFile(exe, os.O_WRONLY, 0)
	if err == nil {
		f.Close()
		t.Fatalf("opened the helper's binary %s (%s) for writing", exe, link)
	}
	if !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.ETXTBSY) {
		t.Errorf("opening the helper's binary for writing: %v, want EROFS", err)
	}
}

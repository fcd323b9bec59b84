package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/continuity/testutil/loopback"
	"github.com/tupper/tupper/internal/harness"
	"golang.org/x/sys/unix"
)

// TestHostileImageEtcLink: an image whose /etc is an absolute symlink to a
// host directory gets its /etc/hosts, /etc/hostname and /etc/resolv.conf
// (which tupper writes for the containers it networks) inside its own
// root, and the host directory is left as it was; as under runc, which
// writes none.
func TestHostileImageEtcLink(t *testing.T) {
	e := newEnv(t)
	hostEtc := t.TempDir()
	image := e.linkedEtcImage(hostEtc)
	for _, rt := range []string{"tupper", "runc"} {
		out, err := e.ctr("run", "--rm", "--runtime", "io.containerd."+rt+".v2", image, "etclink-"+rt, "cat", "/etc/hostname")
		if rt == "tupper" && (err != nil || strings.TrimSpace(out) == "") {
			t.Errorf("tupper: no /etc/hostname in the container (%v):\n%s", err, out)
		}
		if ents, _ := os.ReadDir(hostEtc); len(ents) != 0 {
			t.Fatalf("%s: the image's /etc link made the runtime write into the host's %s: %v", rt, hostEtc, ents)
		}
	}
}

// linkedEtcImage imports an image of busybox whose /etc is an absolute
// symlink to target, and returns its name.
func (e *env) linkedEtcImage(target string) string {
	e.t.Helper()
	rootfs := filepath.Join(e.Dir, "etclink-rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp"} {
		os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	for _, link := range [][2]string{{"/bin/busybox", "bin/busybox"}} {
		b, err := os.ReadFile(link[0])
		if err != nil {
			e.t.Fatal(err)
		}
		os.WriteFile(filepath.Join(rootfs, link[1]), b, 0o755)
	}
	for _, a := range []string{"sh", "cat", "ls"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", a))
	}
	// The link's target exists inside the image too: that is where the
	// files must go.
	os.MkdirAll(filepath.Join(rootfs, target), 0o755)
	if err := os.Symlink(target, filepath.Join(rootfs, "etc")); err != nil {
		e.t.Fatal(err)
	}
	name, archive := harness.ImageName("etclink"), filepath.Join(e.Dir, "etclink.tar")
	harness.BuildImage(e.t, "dir", name, archive, "-rootfs", rootfs, "-env", "PATH=/bin")
	e.mustCtr("images", "import", archive)
	return name
}

// TestHostileDeviceNode: a container may mknod (ctr's default
// capabilities), but its device rules deny every block device, so a node
// with a host disk's numbers does not open; as under runc. The disk is a
// loop device of the test's own holding a marker.
func TestHostileDeviceNode(t *testing.T) {
	e := newEnv(t)
	loop, err := loopback.New(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loop.Close() })
	const marker = "tupper-host-disk-marker"
	if err := os.WriteFile(loop.Device, []byte(marker), 0); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(loop.Device, &st); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("mknod /tmp/disk b %d %d && head -c %d /tmp/disk; echo; echo done",
		unix.Major(st.Rdev), unix.Minor(st.Rdev), len(marker))
	for _, rt := range []string{"tupper", "runc"} {
		out, err := e.ctr("run", "--rm", "--runtime", "io.containerd."+rt+".v2", image, "devnode-"+rt, "sh", "-c", script)
		if err != nil || strings.Contains(out, marker) || !strings.Contains(out, "/tmp/disk: Operation not permitted") || !strings.Contains(out, "done") {
			t.Errorf("%s: want the node's open refused (%v):\n%s", rt, err, out)
		}
	}
}

package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/internal/testutil"
)

// With rootfsPropagation rshared and an rshared volume (what CRI asks for
// Bidirectional mount propagation), the container starts (pivot_root needs
// private mounts for the switch) and mounts propagate both ways: the
// host's into the container, the container's out to the host.
func TestRootfsPropagationShared(t *testing.T) {
	needRoot(t)
	vol := t.TempDir()
	if err := unix.Mount(vol, vol, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unmountAll(vol)
	if err := unix.Mount("", vol, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(vol, "fromhost"), 0o755)
	os.MkdirAll(filepath.Join(vol, "fromcontainer"), 0o755)

	spec := testSpec("sh", "-c", `for i in $(seq 50); do [ -e /vol/fromhost/flag ] && break; sleep 0.1; done
[ -e /vol/fromhost/flag ] && echo host-to-container
mount -t tmpfs none /vol/fromcontainer && touch /vol/fromcontainer/flag && echo mounted
sleep 5`)
	all := append([]string{"CAP_SYS_ADMIN"}, testutil.DefaultCaps...)
	spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
	spec.Linux.RootfsPropagation = "rshared"
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/vol", Type: "bind", Source: vol, Options: []string{"rbind", "rshared"}})
	// As under CRI, the rootfs is itself a (shared) mount: the shim's
	// mount of the snapshot.
	bundle := newBundle(t)
	rootfs := filepath.Join(bundle, "rootfs")
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unmountAll(rootfs)
	if err := unix.Mount("", rootfs, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	r, err := create(t, bundle, spec)
	if err != nil {
		t.Fatalf("create with rootfsPropagation rshared: %v", err)
	}
	if err := r.c.Start(); err != nil {
		t.Fatal(err)
	}
	hostMount := filepath.Join(vol, "fromhost")
	if err := unix.Mount("tmpfs", hostMount, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unmountAll(hostMount)
	os.WriteFile(filepath.Join(hostMount, "flag"), nil, 0o644)

	fromContainer := filepath.Join(vol, "fromcontainer", "flag")
	deadline := time.Now().Add(5 * time.Second)
	for _, err := os.Stat(fromContainer); err != nil && time.Now().Before(deadline); _, err = os.Stat(fromContainer) {
		time.Sleep(100 * time.Millisecond)
	}
	_, statErr := os.Stat(fromContainer)
	unmountAll(filepath.Join(vol, "fromcontainer"))
	r.c.Init().Signal(unix.SIGKILL)
	_, out := r.wait(t)
	if !strings.Contains(out, "host-to-container") || !strings.Contains(out, "mounted") {
		t.Fatalf("inside:\n%s", out)
	}
	if statErr != nil {
		t.Fatalf("the container's mount did not propagate to the host: %v", statErr)
	}
}

func unmountAll(dir string) {
	for unix.Unmount(dir, 0) == nil {
	}
}

// rro makes a volume read-only all the way down, submounts included; a
// plain ro bind leaves the submount writable.
func TestRecursiveReadonlyMount(t *testing.T) {
	needRoot(t)
	vol := t.TempDir()
	sub := filepath.Join(vol, "sub")
	os.MkdirAll(sub, 0o755)
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unmountAll(sub)
	for opt, want := range map[string]string{"rro": "sub-readonly", "ro": "sub-writable"} {
		spec := testSpec("sh", "-c", "touch /vol/top 2>/dev/null || echo top-readonly; touch /vol/sub/x 2>/dev/null && echo sub-writable || echo sub-readonly")
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/vol", Type: "bind", Source: vol, Options: []string{"rbind", opt}})
		out := runOK(t, spec)
		if !strings.Contains(out, "top-readonly") || !strings.Contains(out, want) {
			t.Errorf("%s volume: want top-readonly and %s:\n%s", opt, want, out)
		}
	}
}

package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildImage writes hack/mkimage's archive of the given kind (busybox,
// layers, escape, big, dir, ...) named name to path; flags are more of
// mkimage's flags (-rootfs, -env, ... for kind dir).
func BuildImage(t testing.TB, kind, name, path string, flags ...string) {
	t.Helper()
	args := append([]string{"-kind", kind, "-name", name, "-o", path}, flags...)
	cmd := mkimage(t, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the %s image: %v\n%s", kind, err, out)
	}
}

// EnvMkimage names a built hack/mkimage to use instead of `go run` (the
// VM's guest has no Go toolchain).
const EnvMkimage = "TUPPER_MKIMAGE"

func mkimage(t testing.TB, args ...string) *exec.Cmd {
	if p := os.Getenv(EnvMkimage); p != "" {
		return exec.Command(p, args...)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(goBin, append([]string{"run", "./hack/mkimage"}, args...)...)
	cmd.Dir = RepoRoot(t)
	return cmd
}

// ImageName is the name ImportImage gives an image of the given kind.
func ImageName(kind string) string { return "tupper.local/" + kind + ":latest" }

// ImportImage builds the image of the given kind and imports it into this
// Env's snapshotter, in Namespace or, if any are given, in the namespaces
// named (see CtrIn); it returns the image's name.
func (e *Env) ImportImage(t testing.TB, kind string, namespaces ...string) string {
	t.Helper()
	name, path := ImageName(kind), filepath.Join(e.Dir, kind+".tar")
	BuildImage(t, kind, name, path)
	if len(namespaces) == 0 {
		namespaces = []string{e.Namespace}
	}
	for _, ns := range namespaces {
		if _, err := e.CtrIn(ns, "images", "import", "--snapshotter="+e.Snapshotter, path); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

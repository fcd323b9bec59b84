package harness

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildImage writes hack/mkimage's archive of the given kind (busybox,
// layers, escape, big, dir, ...) named name to path; flags are more of
// mkimage's flags (-rootfs, -env, ... for kind dir).
func BuildImage(t testing.TB, kind, name, path string, flags ...string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	args := append([]string{"run", "./hack/mkimage", "-kind", kind, "-name", name, "-o", path}, flags...)
	cmd := exec.Command(goBin, args...)
	cmd.Dir = RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the %s image: %v\n%s", kind, err, out)
	}
}

// ImageName is the name ImportImage gives an image of the given kind.
func ImageName(kind string) string { return "tupper.local/" + kind + ":latest" }

// ImportImage builds the image of the given kind and imports it into this
// Env's snapshotter; it returns the image's name.
func (e *Env) ImportImage(t testing.TB, kind string) string {
	t.Helper()
	name, path := ImageName(kind), filepath.Join(e.Dir, kind+".tar")
	BuildImage(t, kind, name, path)
	e.MustCtr(t, "images", "import", "--snapshotter="+e.Snapshotter, path)
	return name
}

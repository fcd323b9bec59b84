package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolveInRoot(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "run/x"), 0o755)
	os.MkdirAll(filepath.Join(root, "var"), 0o755)
	os.Symlink("/run", filepath.Join(root, "var/run"))          // absolute: container path
	os.Symlink("../run", filepath.Join(root, "var/rel"))        // relative, stays inside
	os.Symlink("../../../etc", filepath.Join(root, "var/evil")) // climbs above root
	os.Symlink("/../../etc", filepath.Join(root, "evil2"))      // absolute but climbs
	for in, want := range map[string]string{
		"/var/run/x":  "run/x",
		"/var/rel/x":  "run/x",
		"/../../var":  "var",
		"/new/dir":    "new/dir",
		"var/run/new": "run/new",
	} {
		got, err := resolveInRoot(root, in)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("resolve %q = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"/var/evil/passwd", "/evil2"} {
		if _, err := resolveInRoot(root, in); err == nil || !strings.Contains(err.Error(), "escapes the rootfs") {
			t.Errorf("resolve %q: err %v, want escape", in, err)
		}
	}
}

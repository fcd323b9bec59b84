package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHelperBinaryChoice: helpers run tupper-helper from next to this
// binary when it is an executable regular file there, this binary
// otherwise.
func TestHelperBinaryChoice(t *testing.T) {
	for _, c := range []struct {
		name    string
		sibling func(p string) error // makes what sits at dir/tupper-helper
		self    bool
	}{
		{"executable file", func(p string) error { return os.WriteFile(p, []byte("#!/bin/true\n"), 0o755) }, false},
		{"none", func(string) error { return nil }, true},
		{"not executable", func(p string) error { return os.WriteFile(p, nil, 0o644) }, true},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }, true},
		{"dangling symlink", func(p string) error { return os.Symlink("/nonexistent", p) }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			exe := filepath.Join(dir, "containerd-shim-tupper-v2")
			if err := os.WriteFile(exe, nil, 0o755); err != nil {
				t.Fatal(err)
			}
			sibling := filepath.Join(dir, HelperName)
			if err := c.sibling(sibling); err != nil {
				t.Fatal(err)
			}
			want := sibling
			if c.self {
				want = exe
			}
			if got := helperBinary(exe); got != want {
				t.Errorf("helperBinary(%s) = %s, want %s", exe, got, want)
			}
		})
	}
}

// TestHelperFromAnotherBuild: a helper whose binary is not of the shim's
// build refuses to go on, and Create says why.
func TestHelperFromAnotherBuild(t *testing.T) {
	needRoot(t)
	saved := helperEnv
	helperEnv += "-another-build"
	defer func() { helperEnv = saved }()
	if _, err := create(t, newBundle(t), testSpec("true")); err == nil {
		t.Fatal("Create succeeded with a helper of another build")
	} else if !strings.Contains(err.Error(), "helper binary is version") || !strings.Contains(err.Error(), "another-build") {
		t.Errorf("Create: %v, want the two versions named", err)
	}
}

package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tupper/tupper/internal/testutil"
)

// TestHelperBinaryChoice: helpers run tupper-helper from next to this
// binary when it is an executable regular file there (a symlink to one
// resolved), this binary otherwise.
func TestHelperBinaryChoice(t *testing.T) {
	executable := func(p string) (string, error) { return p, os.WriteFile(p, []byte("#!/bin/true\n"), 0o755) }
	for _, c := range []struct {
		name string
		// sibling makes what sits at p, dir/tupper-helper, and returns the
		// binary helpers must run ("" for this binary).
		sibling func(p string) (string, error)
	}{
		{"executable file", executable},
		{"none", func(string) (string, error) { return "", nil }},
		{"not executable", func(p string) (string, error) { return "", os.WriteFile(p, nil, 0o644) }},
		{"directory", func(p string) (string, error) { return "", os.Mkdir(p, 0o755) }},
		{"dangling symlink", func(p string) (string, error) { return "", os.Symlink("/nonexistent", p) }},
		{"symlink to an executable file", func(p string) (string, error) {
			target, err := executable(filepath.Join(filepath.Dir(p), "elsewhere"))
			if err == nil {
				err = os.Symlink(target, p)
			}
			return target, err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, err := filepath.EvalSymlinks(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			exe := filepath.Join(dir, "containerd-shim-tupper-v2")
			if err := os.WriteFile(exe, nil, 0o755); err != nil {
				t.Fatal(err)
			}
			want, err := c.sibling(filepath.Join(dir, HelperName))
			if err != nil {
				t.Fatal(err)
			}
			if want == "" {
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

// TestWarmUpSealsTheHelper: WarmUp makes the sealed view of the helper
// binary, so that a shim's first Create does not. Each mode runs in a new
// process, where nothing else has made it yet.
func TestWarmUpSealsTheHelper(t *testing.T) {
	sealedFd := fmt.Sprintf("/proc/self/fd/%d", sealedExeFd)
	if mode := os.Getenv("TUPPER_WARM_SEAL_TEST"); mode != "" {
		if mode == "warm" {
			WarmUp()
		}
		_, err := os.Lstat(sealedFd)
		fmt.Printf("sealed %t\n", err == nil)
		return
	}
	sealed := func(mode string) bool {
		out := testutil.RerunTest(t, "TUPPER_WARM_SEAL_TEST", mode)
		_, v, ok := strings.Cut(out, "sealed ")
		if !ok {
			t.Fatalf("%s: no answer in %q", mode, out)
		}
		return strings.HasPrefix(v, "true")
	}
	if sealed("cold") {
		t.Fatalf("a new process already has %s: the test cannot see what WarmUp does", sealedFd)
	}
	if !sealed("warm") {
		t.Errorf("after WarmUp, no sealed helper binary at %s", sealedFd)
	}
	if got, err := sealedExe(); err != nil || got != sealedFd {
		t.Errorf("sealedExe() = %q, %v; want %s", got, err, sealedFd)
	}
}

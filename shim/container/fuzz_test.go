package container

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// FuzzResolveInRoot: whatever a spec names as a mount destination, in a
// rootfs full of hostile symlinks (absolute, climbing, looping, pointing at
// the host), the result is refused or lies inside the rootfs; never a panic.
func FuzzResolveInRoot(f *testing.F) {
	for _, s := range []string{"/etc/passwd", "/var/run/x", "../../etc", "/a/../../b", "/loop/x", "/up/x", "/host/x", "/dot/./x", strings.Repeat("../", 40) + "etc"} {
		f.Add(s)
	}
	root := f.TempDir()
	outside := f.TempDir() // stands for the host: nothing may resolve into it
	for _, d := range []string{"etc", "run/x", "var", "a/b"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	for link, target := range map[string]string{
		"var/run": "/run", "up": "../../..", "host": outside, "loop": "loop2", "loop2": "loop",
		"dot": ".", "a/b/c": "../../../../etc", "abs-up": "/../../..", "etc/shadow": "/proc/self/root/etc/shadow",
	} {
		os.Symlink(target, filepath.Join(root, link))
	}
	f.Fuzz(func(t *testing.T, dest string) {
		if strings.ContainsRune(dest, 0) {
			return
		}
		got, err := resolveInRoot(root, dest)
		if err != nil {
			return
		}
		rel, rerr := filepath.Rel(root, got)
		if rerr != nil || rel == ".." || strings.HasPrefix(rel, "../") || strings.HasPrefix(got, outside) {
			t.Fatalf("%q resolved to %q, outside the rootfs %q", dest, got, root)
		}
	})
}

// FuzzValidateSpec: any config.json is refused with an error or accepted;
// the checks Create runs before starting anything never panic.
func FuzzValidateSpec(f *testing.F) {
	for _, s := range []string{
		`{"ociVersion":"1.0.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}`,
		`{"process":{"args":[],"cwd":"relative","capabilities":{"bounding":["CAP_NOPE"]}},"linux":{"namespaces":[{"type":"bogus","path":"/x"}]}}`,
		`{"process":{"args":["x"],"cwd":"/","rlimits":[{"type":"RLIMIT_NOPE"}]},"mounts":[{"destination":"../../etc","type":"bind","source":"/"}],"linux":{"sysctl":{"kernel.panic":"1"},"seccomp":{"defaultAction":"SCMP_ACT_NOPE"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var spec specs.Spec
		if json.Unmarshal(b, &spec) != nil {
			return
		}
		if validate(&spec) != nil {
			return
		}
		checkSecurity(&spec, testSeccomp)
		rootfsPath(t.TempDir(), &spec)
	})
}

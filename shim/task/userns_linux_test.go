package task

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
)

// usernsBundle rewrites newBundle's spec: the rootfs belongs to the
// mapped root and the bundle path is searchable by it (as containerd
// prepares both), and edit adjusts the spec.
func usernsBundle(t *testing.T, edit func(*specs.Spec), args ...string) string {
	t.Helper()
	dir := newBundle(t, args...)
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o711)
	}
	filepath.Walk(filepath.Join(dir, "rootfs"), func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(p, 100000, 100000)
		}
		return err
	})
	var spec specs.Spec
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	edit(&spec)
	b, _ = json.Marshal(spec)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	return dir
}

// TestPodUserNamespace is CRI's shape: a sandbox in a new user namespace,
// and a container that joins it by path with a pid namespace of its own.
// The second container's helper is forked by shim/nsenter with libc's
// fork (the test process is a child subreaper, as the shim is), inherited
// and adopted through the reaper: its pid, output and exit status come
// back like any other.
func TestPodUserNamespace(t *testing.T) {
	s, _, ctx := newService(t)
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	pod := usernsBundle(t, func(sp *specs.Spec) {
		sp.Linux.Namespaces = append(sp.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		sp.Linux.UIDMappings, sp.Linux.GIDMappings = m, m
	}, "sleep", "100")
	cr, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "pod", Bundle: pod})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Kill(ctx, &taskAPI.KillRequest{ID: "pod", Signal: 9})
		s.Wait(ctx, &taskAPI.WaitRequest{ID: "pod"})
		s.Delete(ctx, &taskAPI.DeleteRequest{ID: "pod"})
	})
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "pod"}); err != nil {
		t.Fatal(err)
	}
	app := usernsBundle(t, func(sp *specs.Spec) {
		sp.Linux.Namespaces = append(sp.Linux.Namespaces, specs.LinuxNamespace{
			Type: specs.UserNamespace, Path: fmt.Sprintf("/proc/%d/ns/user", cr.Pid)})
	}, "sh", "-c", "echo $$; cat /proc/self/uid_map; exit 3")
	out, read := fifoReader(t)
	ar, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: app, Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", cr.Pid)); want == "" {
		t.Fatal("pod has no user namespace")
	} else if got, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", ar.Pid)); got != want {
		t.Errorf("app's user namespace %s, want the pod's %s", got, want)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "app"})
	if err != nil || w.ExitStatus != 3 {
		t.Fatalf("wait app: %v %v", w, err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "1\n         0     100000      65536\n" {
		t.Errorf("app output %q", got)
	}
}

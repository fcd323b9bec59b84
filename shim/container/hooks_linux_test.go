package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestHooks(t *testing.T) {
	needRoot(t)
	bundle := newBundle(t)
	out := t.TempDir()
	hook := func(name, where string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c",
			fmt.Sprintf("cat > %[1]s/%[2]s.json; readlink /proc/self/ns/mnt > %[1]s/%[2]s.mnt; echo $FOO >> %[1]s/%[2]s.mnt", where, name)},
			Env: []string{"FOO=bar"}}
	}
	spec := testSpec("true")
	spec.Hooks = &specs.Hooks{
		CreateRuntime:   []specs.Hook{hook("createRuntime", out)},
		CreateContainer: []specs.Hook{hook("createContainer", out)},
		StartContainer:  []specs.Hook{hook("startContainer", "/tmp")},
	}
	spec.Annotations = map[string]string{"a": "b"}
	r, err := create(t, bundle, spec)
	if err != nil {
		t.Fatal(err)
	}
	hostMnt, _ := os.Readlink("/proc/self/ns/mnt")
	ctrMnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", r.c.Pid()))
	check := func(dir, name, mnt string, status specs.ContainerState) {
		t.Helper()
		var st specs.State
		b, err := os.ReadFile(filepath.Join(dir, name+".json"))
		if err != nil {
			t.Fatalf("%s did not run: %v", name, err)
		}
		if err := json.Unmarshal(b, &st); err != nil || st.ID != "t" || st.Pid != r.c.Pid() || st.Status != status || st.Bundle != bundle || st.Annotations["a"] != "b" {
			t.Errorf("%s state %+v %v", name, st, err)
		}
		m, _ := os.ReadFile(filepath.Join(dir, name+".mnt"))
		if string(m) != mnt+"\nbar\n" {
			t.Errorf("%s ran in %q, want %q", name, m, mnt)
		}
	}
	check(out, "createRuntime", hostMnt, specs.StateCreating)
	check(out, "createContainer", ctrMnt, specs.StateCreating)
	if err := r.c.Start(); err != nil {
		t.Fatal(err)
	}
	r.wait(t)
	check(filepath.Join(bundle, "rootfs/tmp"), "startContainer", ctrMnt, specs.StateCreated)
}

func TestFailingHook(t *testing.T) {
	needRoot(t)
	bundle := newBundle(t)
	spec := testSpec("true")
	one := 1
	spec.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo nope; exit 3"}}}}
	if _, err := create(t, bundle, spec); err == nil || !strings.Contains(err.Error(), "createRuntime hook #0 (/bin/sh): exit status 3: nope") {
		t.Fatalf("create: %v", err)
	}
	spec.Hooks = &specs.Hooks{CreateContainer: []specs.Hook{{Path: "/bin/sleep", Args: []string{"sleep", "10"}, Timeout: &one}}}
	if _, err := create(t, bundle, spec); err == nil || !strings.Contains(err.Error(), "timed out after 1s") {
		t.Fatalf("create: %v", err)
	}
	if ms := mountsUnder(t, bundle); len(ms) != 0 {
		t.Fatalf("left mounts behind: %v", ms)
	}
}

// TestPoststopAfterFailedCreate: a create that fails after the runtime's
// hooks ran (the program does not exist) runs the poststop hooks, which
// undo what those hooks set up, as runc's teardown of a failed create
// does; one that fails before them does not.
func TestPoststopAfterFailedCreate(t *testing.T) {
	needRoot(t)
	out := t.TempDir()
	hook := func(name string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(out, name)}}
	}
	spec := testSpec("/nonexistent")
	spec.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{hook("createRuntime")}, Poststop: []specs.Hook{hook("poststop")}}
	if _, err := create(t, newBundle(t), spec); err == nil || !strings.Contains(err.Error(), "/nonexistent") {
		t.Fatalf("create: %v", err)
	}
	var st specs.State
	b, err := os.ReadFile(filepath.Join(out, "poststop"))
	if err != nil {
		t.Fatalf("poststop did not run: %v", err)
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Status != specs.StateStopped || st.ID != "t" {
		t.Errorf("poststop state %s: %v", b, err)
	}
	os.Remove(filepath.Join(out, "poststop"))
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/x", Type: "nosuchfs", Source: "none"})
	if _, err := create(t, newBundle(t), spec); err == nil {
		t.Fatal("create with a bad mount succeeded")
	}
	if _, err := os.Stat(filepath.Join(out, "poststop")); err == nil {
		t.Error("poststop ran for a create that failed before the runtime hooks")
	}
}

package cgroups

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// memoryDir is the container's memory cgroup directory on v1 or v2.
func memoryDir(path string) string {
	if unified() {
		return filepath.Join(mountpoint, path)
	}
	return filepath.Join(mountpoint, "memory", path)
}

// TestPlacementNotRemadeAfterRemove: a helper starting after Remove (an
// exec racing Delete) is refused instead of making the cgroup again, which
// nothing would remove.
func TestPlacementNotRemadeAfterRemove(t *testing.T) {
	path := testPath(t)
	spec := &specs.Spec{Linux: &specs.Linux{CgroupsPath: path, Resources: &specs.LinuxResources{}}}
	p, err := NewPlacement(t.Context(), "c", spec, false)
	if err != nil {
		t.Fatal(err)
	}
	j, err := p.Join()
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	if _, err := os.Stat(memoryDir(path)); err != nil {
		t.Fatalf("join made no cgroup: %v", err)
	}
	if err := p.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Join(); !errdefs.IsFailedPrecondition(err) || !IsRemoved(err) {
		t.Errorf("join after remove: %v, want ErrRemoved", err)
	}
	if err := p.Spawned(os.Getpid()); !IsRemoved(err) {
		t.Errorf("spawned after remove: %v, want ErrRemoved", err)
	}
	if _, err := os.Stat(memoryDir(path)); err == nil {
		t.Errorf("cgroup %s made again after remove", path)
	}
}

// TestPlacementDefaults: no cgroup without a path and resources; a spec
// with resources and no path gets DefaultPath; the default device rules
// follow the spec's own (a deny-all spec still has /dev/null).
func TestPlacementDefaults(t *testing.T) {
	p, err := NewPlacement(t.Context(), "c", &specs.Spec{Linux: &specs.Linux{}}, false)
	if p != nil || err != nil {
		t.Fatalf("no path, no resources: %v %v", p, err)
	}
	if p.Manager() != nil || p.Remove() != nil || p.Spawned(1) != nil {
		t.Fatal("a nil placement must do nothing")
	}
	path := testPath(t)
	deny := []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
	spec := &specs.Spec{Linux: &specs.Linux{CgroupsPath: path, Resources: &specs.LinuxResources{Devices: deny}}}
	if p, err = NewPlacement(t.Context(), "c", spec, false); err != nil {
		t.Fatal(err)
	}
	defer p.Remove()
	j, err := p.Join()
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	if unified() {
		return // device rules are an eBPF program there, see TestDeviceRules
	}
	list := controllerFile(t, p.Manager(), "devices", "devices.list")
	for _, want := range []string{"c 1:3 rwm", "c 136:* rwm", "c *:* m"} {
		if !strings.Contains("\n"+list, "\n"+want+"\n") {
			t.Errorf("devices.list lacks %q:\n%s", want, list)
		}
	}
	if _, err := NewPlacement(t.Context(), "c", &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}, false); err != nil {
		t.Errorf("resources without a path: %v", err)
	}
}

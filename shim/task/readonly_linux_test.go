package task

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/api/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"github.com/tupper/tupper/shim/network"
)

// TestReadOnlyRootfsMount: a container whose rootfs containerd mounts
// read-only (a view snapshot, as containerd's user-namespace tests use)
// and that lacks /etc/hosts & co. is created; tupper then writes none of
// them, since a runtime must not need to write into a rootfs to start it.
func TestReadOnlyRootfsMount(t *testing.T) {
	s, _, ctx := newService(t)
	src := newBundle(t, "true")
	for _, d := range []string{"proc", "dev", "etc"} {
		os.Mkdir(filepath.Join(src, "rootfs", d), 0o755) // as an image has them
	}
	bundle := t.TempDir()
	spec := readSpecFile(t, src)
	spec.Root.Path = "rootfs"
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	spec.Annotations = map[string]string{network.AnnotationMode: "none"}
	b, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644)
	_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "ro1", Bundle: bundle,
		Rootfs: []*types.Mount{{Type: "bind", Source: filepath.Join(src, "rootfs"), Options: []string{"rbind", "ro"}}}})
	if err != nil {
		t.Fatalf("create on a read-only rootfs: %v", err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "ro1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, "rootfs/etc/hosts")); err == nil {
		t.Error("/etc/hosts written into a read-only rootfs")
	}
}

func readSpecFile(t *testing.T, bundle string) *specs.Spec {
	t.Helper()
	spec, err := readSpec(bundle)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

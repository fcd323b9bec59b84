package task

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"

	optionspb "github.com/tupper/tupper/proto/options"
)

// TestCgroupDelegation: a container in a user namespace, with a cgroup
// namespace and a read-write cgroup mount, owns its cgroup where runc
// gives it (cgroup v2, systemd driver: the scope is delegated to the
// mapped root, which can then make child cgroups, as systemd in a
// container does); with the cgroupfs driver, and on v1, root keeps it,
// as with runc. Without systemd the systemd driver is refused.
func TestCgroupDelegation(t *testing.T) {
	for _, systemd := range []bool{false, true} {
		name := map[bool]string{false: "cgroupfs", true: "systemd"}[systemd]
		t.Run(name, func(t *testing.T) { testDelegation(t, systemd) })
	}
}

func testDelegation(t *testing.T, systemd bool) {
	s, _, ctx := newService(t)
	v2 := cgroups.Mode() == cgroups.Unified
	inside := "/sys/fs/cgroup/memory" // v1: the bind of the memory cgroup
	if v2 {
		inside = "/sys/fs/cgroup"
	}
	id := fmt.Sprintf("deleg%d", time.Now().UnixNano()%1e9)
	path, hostDir := testCgroupParent+"/"+id, "/sys/fs/cgroup"+testCgroupParent+"/"+id
	if !v2 {
		hostDir = "/sys/fs/cgroup/memory" + testCgroupParent + "/" + id
	}
	if systemd {
		path, hostDir = "system.slice:tuppertest:"+id, "/sys/fs/cgroup/system.slice/tuppertest-"+id+".scope"
	}
	t.Cleanup(func() {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + testCgroupParent)
		for _, d := range append(dirs, "/sys/fs/cgroup"+testCgroupParent) {
			syscall.Rmdir(d)
		}
	})
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	bundle := usernsBundle(t, func(sp *specs.Spec) {
		sp.Linux.Namespaces = append(sp.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace},
			specs.LinuxNamespace{Type: specs.CgroupNamespace})
		sp.Linux.UIDMappings, sp.Linux.GIDMappings = m, m
		sp.Linux.CgroupsPath = path
		sp.Mounts = append(sp.Mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup",
			Options: []string{"nosuid", "noexec", "nodev", "rw"}})
	}, "sh", "-c", "busybox stat -c %u "+inside+"; busybox mkdir "+inside+"/child 2>/dev/null && echo made; busybox rmdir "+inside+"/child 2>/dev/null; true")
	opts, err := typeurl.MarshalAnyToProto(&optionspb.Options{SystemdCgroup: systemd})
	if err != nil {
		t.Fatal(err)
	}
	out, read := fifoReader(t)
	_, err = s.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: bundle, Stdout: out, Options: opts})
	if _, noSystemd := os.Stat("/run/systemd/system"); systemd && noSystemd != nil {
		if !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) || !strings.Contains(err.Error(), "systemd") {
			t.Fatalf("systemd driver without systemd: %v, want a failed precondition naming systemd", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Delete(ctx, &taskAPI.DeleteRequest{ID: id}) })
	var st syscall.Stat_t
	if err := syscall.Stat(hostDir, &st); err != nil {
		t.Fatalf("the container's cgroup on the host: %v", err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: id}); err != nil || w.ExitStatus != 0 {
		t.Fatalf("wait: %v %v", w, err)
	}
	got := read()
	delegated := v2 && systemd
	wantUID, want := uint32(0), "65534\n" // root's, unmapped in the container
	if delegated {
		wantUID, want = 100000, "0\nmade\n"
	}
	if st.Uid != wantUID || got != want {
		t.Errorf("delegated=%v: host owner %d (want %d), inside %q (want %q)", delegated, st.Uid, wantUID, got, want)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(hostDir); !os.IsNotExist(err) {
		t.Errorf("cgroup %s left after delete: %v", hostDir, err)
	}
}

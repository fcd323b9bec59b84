package cgroups

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/cgroups/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// On a hybrid host runc puts a container in the v2 hierarchy too
// (/proc/<pid>/cgroup shows 0::/default/<id>, not 0::/); so must we, for
// a process cloned into the cgroup (the init helper's way in where clone3
// is) and for one moved there (Add).
func TestHybridUnifiedCgroup(t *testing.T) {
	if cgroups.Mode() != cgroups.Hybrid {
		t.Skip("only hybrid hosts (v1 controllers with v2 mounted at /sys/fs/cgroup/unified) have this second hierarchy")
	}
	path := testPath(t)
	m, err := New(context.Background(), path, &specs.LinuxResources{}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !exists(unifiedMount + path) {
		t.Fatalf("no %s", unifiedMount+path)
	}
	moved := exec.Command("sleep", "100")
	if err := moved.Start(); err != nil {
		t.Fatal(err)
	}
	defer moved.Process.Kill()
	if err := m.Add(moved.Process.Pid); err != nil {
		t.Fatal(err)
	}
	pids, cmds := []int{moved.Process.Pid}, []*exec.Cmd{moved}
	if dir, err := m.JoinDir(); err != nil {
		t.Fatal(err)
	} else if dir != nil {
		cloned := exec.Command("sleep", "100")
		cloned.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
		if err := cloned.Start(); err != nil {
			t.Fatal(err)
		}
		defer cloned.Process.Kill()
		dir.Close()
		checkUnified(t, cloned.Process.Pid, path) // placed by the clone alone
		// The v1 side, which the init helper enters by its tasks files.
		if err := m.Add(cloned.Process.Pid); err != nil {
			t.Fatal(err)
		}
		pids, cmds = append(pids, cloned.Process.Pid), append(cmds, cloned)
	}
	for _, pid := range pids {
		checkUnified(t, pid, path)
	}
	go func() { // what the shim's reaper does for killed processes
		for _, c := range cmds {
			c.Wait()
		}
	}()
	if err := m.Delete(); err != nil {
		t.Fatal(err)
	}
	if exists(unifiedMount + path) {
		t.Errorf("%s left after Delete", unifiedMount+path)
	}
}

func checkUnified(t *testing.T, pid int, path string) {
	t.Helper()
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if !strings.Contains(string(b), "\n0::"+path+"\n") && !strings.HasPrefix(string(b), "0::"+path+"\n") {
		t.Errorf("pid %d: /proc/pid/cgroup lacks 0::%s:\n%s", pid, path, b)
	}
}

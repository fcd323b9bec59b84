package task

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
)

// TestSameCgroupAsTupperRun: the shim and tupper-run put a container with
// the same spec in the same cgroup: the same limits and, after the
// spec's own deny-all rule, the same default device rules (runc's).
func TestSameCgroupAsTupperRun(t *testing.T) {
	s, _, ctx := newService(t)
	limit, pids := int64(64<<20), int64(100)
	res := &specs.LinuxResources{
		Memory:  &specs.LinuxMemory{Limit: &limit},
		Pids:    &specs.LinuxPids{Limit: &pids},
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	shimBundle, _ := cgroupBundle(t, res, "sleep", "100")
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "same1", Bundle: shimBundle}); err != nil {
		t.Fatal(err)
	}
	shim := cgroupFiles(t, cgroupsPathOf(t, shimBundle))
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "same1"}); err != nil {
		t.Fatal(err)
	}
	runBundle, _ := cgroupBundle(t, res, "sleep", "100")
	run := tupperRunCgroup(t, runBundle)
	if len(shim) == 0 || fmt.Sprint(shim) != fmt.Sprint(run) {
		t.Errorf("the shim's cgroup:\n%v\ntupper-run's:\n%v", shim, run)
	}
}

// tupperRunCgroup runs bundle with cmd/tupper-run and returns its
// container's cgroup files, read while it runs.
func tupperRunCgroup(t *testing.T, bundle string) map[string]string {
	t.Helper()
	// TUPPER_TEST_TUPPER_RUN names a built one (hack/vm's guest has no Go).
	bin := os.Getenv("TUPPER_TEST_TUPPER_RUN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "tupper-run")
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/tupper/tupper/cmd/tupper-run").CombinedOutput(); err != nil {
			t.Fatalf("build tupper-run: %v\n%s", err, out)
		}
	}
	cmd := exec.Command(bin, "-id", "same2", bundle)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	path := cgroupsPathOf(t, bundle)
	procs := "/sys/fs/cgroup/pids" + path + "/cgroup.procs"
	if _, err := os.Stat("/sys/fs/cgroup/pids"); err != nil {
		procs = "/sys/fs/cgroup" + path + "/cgroup.procs"
	}
	var pid int
	for deadline := time.Now().Add(20 * time.Second); pid == 0; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(procs); err == nil {
			fmt.Sscan(string(b), &pid)
		}
		if pid == 0 && time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("tupper-run's container never showed up in %s", procs)
		}
	}
	files := cgroupFiles(t, path)
	syscall.Kill(pid, syscall.SIGKILL) // PID 1 of its namespace ignores the rest
	cmd.Wait()
	return files
}

func cgroupsPathOf(t *testing.T, bundle string) string {
	t.Helper()
	var spec specs.Spec
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	if err != nil {
		t.Fatal(err)
	}
	return spec.Linux.CgroupsPath
}

// cgroupFiles reads the files that hold a cgroup's limits, by name.
func cgroupFiles(t *testing.T, path string) map[string]string {
	t.Helper()
	files := []string{"devices/devices.list", "memory/memory.limit_in_bytes", "pids/pids.max"}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		files = []string{"memory.max", "pids.max"} // v2: devices are an eBPF program
	}
	out := map[string]string{}
	for _, f := range files {
		dir, name := filepath.Split(f)
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", dir, path, name))
		if err != nil {
			t.Fatalf("cgroup %s: %v", path, err)
		}
		out[f] = string(b)
	}
	return out
}

package task

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/internal/testutil"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"github.com/tupper/tupper/shim/cgroups"
)

const testCgroupParent = "/tupper-task-test"

// cgroupBundle is newBundle with a cgroupsPath and resources. It returns
// the bundle and the cgroup's memory (v1) or unified (v2) directory.
func cgroupBundle(t *testing.T, res *specs.LinuxResources, args ...string) (string, string) {
	t.Helper()
	path := testCgroupPath(t)
	dir := newBundle(t, args...)
	var spec specs.Spec
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	spec.Linux.CgroupsPath = path
	spec.Linux.Resources = res
	b, _ = json.Marshal(spec)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil {
		return dir, "/sys/fs/cgroup/memory" + path
	}
	return dir, "/sys/fs/cgroup" + path
}

// testCgroupPath is a cgroupsPath of the test's own, under a parent that
// cleanup removes; the test is skipped without a memory controller.
func testCgroupPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err != nil || !strings.Contains(string(b), "memory") {
			testutil.Require(t, "needs the memory cgroup controller")
		}
	}
	t.Cleanup(func() {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + testCgroupParent)
		dirs = append(dirs, "/sys/fs/cgroup"+testCgroupParent)
		for _, d := range dirs {
			syscall.Rmdir(d)
		}
	})
	return fmt.Sprintf("%s/%s-%d", testCgroupParent, t.Name(), time.Now().UnixNano())
}

// TestCgroupRPCs drives a container with an exec through the RPCs that
// use its cgroup: Pids, Pause/Resume, Stats, Update, and a Kill while
// paused; Delete removes the cgroup.
func TestCgroupRPCs(t *testing.T) {
	s, rec, ctx := newService(t)
	bundle, cgdir := cgroupBundle(t, &specs.LinuxResources{}, "sh", "-c", "while :; do :; done")
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "cg1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cgdir); err != nil {
		t.Fatalf("no cgroup after create: %v", err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "cg1"}); err != nil {
		t.Fatal(err)
	}
	spec, _ := typeurl.MarshalAnyToProto(&specs.Process{Args: []string{"sleep", "100"}, Env: []string{"PATH=/bin"}, Cwd: "/"})
	if _, err := s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "cg1", ExecID: "e1", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Start(ctx, &taskAPI.StartRequest{ID: "cg1", ExecID: "e1"})
	if err != nil {
		t.Fatal(err)
	}
	checkPids(ctx, t, s, st.Pid)
	checkPauseResume(ctx, t, s)
	checkStats(ctx, t, s)
	checkUpdate(ctx, t, s, cgdir)
	// A paused container is killed all the same.
	s.Pause(ctx, &taskAPI.PauseRequest{ID: "cg1"})
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "cg1", Signal: 9, All: true}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "cg1"}); err != nil || w.ExitStatus != 137 {
		t.Fatalf("wait %v %v", w, err)
	}
	s.Delete(ctx, &taskAPI.DeleteRequest{ID: "cg1", ExecID: "e1"})
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "cg1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cgdir); !os.IsNotExist(err) {
		t.Fatalf("cgroup %s left after delete: %v", cgdir, err)
	}
	rec.wait(t, []string{"/tasks/create", "/tasks/start", "/tasks/exec-added e1", "/tasks/exec-started e1",
		"/tasks/paused", "/tasks/resumed", "/tasks/paused", "/tasks/exit e1 137", "/tasks/exit cg1 137", "/tasks/delete"})
}

// checkPids wants every process of cg1's cgroup, the exec marked with its id.
func checkPids(ctx context.Context, t *testing.T, s *service, execPid uint32) {
	t.Helper()
	pids, err := s.Pids(ctx, &taskAPI.PidsRequest{ID: "cg1"})
	if err != nil || len(pids.Processes) != 2 {
		t.Fatalf("pids %v %v", pids, err)
	}
	for _, p := range pids.Processes {
		if p.Pid != execPid {
			continue
		}
		v, err := typeurl.UnmarshalAny(p.Info)
		if d, ok := v.(*options.ProcessDetails); err != nil || !ok || d.ExecID != "e1" {
			t.Fatalf("exec %d info %v %v", p.Pid, v, err)
		}
	}
}

// checkPauseResume wants cg1 and its exec PAUSED after Pause, RUNNING
// after Resume.
func checkPauseResume(ctx context.Context, t *testing.T, s *service) {
	t.Helper()
	if _, err := s.Pause(ctx, &taskAPI.PauseRequest{ID: "cg1"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "e1"} {
		if r, err := s.State(ctx, &taskAPI.StateRequest{ID: "cg1", ExecID: id}); err != nil || r.Status != task.Status_PAUSED {
			t.Fatalf("state of %q while paused: %v %v", id, r, err)
		}
	}
	if _, err := s.Resume(ctx, &taskAPI.ResumeRequest{ID: "cg1"}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.State(ctx, &taskAPI.StateRequest{ID: "cg1"}); r.Status != task.Status_RUNNING {
		t.Fatalf("state after resume: %v", r.Status)
	}
}

// checkStats wants the Metrics type containerd and CRI decode, with real
// numbers.
func checkStats(ctx context.Context, t *testing.T, s *service) {
	t.Helper()
	sr, err := s.Stats(ctx, &taskAPI.StatsRequest{ID: "cg1"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := typeurl.UnmarshalAny(sr.Stats)
	if err != nil {
		t.Fatal(err)
	}
	switch m := v.(type) {
	case *v1.Metrics:
		if m.CPU.Usage.Total == 0 || m.Memory.Usage.Usage == 0 || m.Pids.Current != 2 {
			t.Fatalf("v1 metrics %v", m)
		}
	case *v2.Metrics:
		if m.CPU.UsageUsec == 0 || m.Memory.Usage == 0 || m.Pids.Current != 2 {
			t.Fatalf("v2 metrics %v", m)
		}
	default:
		t.Fatalf("stats are %T", v)
	}
}

// checkUpdate sets cg1's memory limit and reads it back from the cgroup.
func checkUpdate(ctx context.Context, t *testing.T, s *service, cgdir string) {
	t.Helper()
	limit := int64(48 << 20)
	res, _ := typeurl.MarshalAnyToProto(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
	if _, err := s.Update(ctx, &taskAPI.UpdateTaskRequest{ID: "cg1", Resources: res}); err != nil {
		t.Fatal(err)
	}
	file := "memory.limit_in_bytes"
	if !strings.HasPrefix(cgdir, "/sys/fs/cgroup/memory") {
		file = "memory.max"
	}
	if b, _ := os.ReadFile(filepath.Join(cgdir, file)); strings.TrimSpace(string(b)) != fmt.Sprint(limit) {
		t.Fatalf("%s is %q after update", file, b)
	}
}

func TestCgroupOOMBeforeExit(t *testing.T) {
	s, rec, ctx := newService(t)
	limit := int64(32 << 20)
	bundle, _ := cgroupBundle(t, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}},
		"busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "oom", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "oom"}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "oom"}); err != nil || w.ExitStatus != 137 {
		t.Fatalf("wait %v %v", w, err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "oom"}); err != nil {
		t.Fatal(err)
	}
	// The OOM kill goes out before the exit it caused. Its place against
	// TaskStart is not fixed: the kernel can kill the program as soon as
	// it is exec'd, before Start has reported it (runc's shim is the same).
	got := rec.waitCount(t, 5)
	oom := slices.Index(got, "/tasks/oom")
	rest := slices.Delete(slices.Clone(got), oom, oom+1)
	if oom < 1 || oom > 2 || !slices.Equal(rest, []string{"/tasks/create", "/tasks/start", "/tasks/exit oom 137", "/tasks/delete"}) {
		t.Fatalf("events %q: want create, start, exit and delete in order, and the OOM after create and before the exit", got)
	}
}

func TestCgroupCheckFailsCreate(t *testing.T) {
	s, rec, ctx := newService(t)
	bundle, cgdir := cgroupBundle(t, &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "60-63"}}, "true")
	_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "chk", Bundle: bundle})
	if !errdefs.IsInvalidArgument(errgrpc.ToNative(err)) || !strings.Contains(err.Error(), "linux.resources.cpu.cpus") {
		t.Fatalf("create: %v", err)
	}
	if _, err := os.Stat(cgdir); !os.IsNotExist(err) {
		t.Fatalf("cgroup %s made for a failed create", cgdir)
	}
	if len(s.containers) != 0 {
		t.Fatal("container registered")
	}
	rec.wait(t, nil)
}

// TestOOMCountAfterCgroupRemoved has the kernel OOM-kill an init whose
// cgroup is then removed, as systemd removes an emptied scope before the
// shim reads its count: the count comes from the kernel's log instead.
func TestOOMCountAfterCgroupRemoved(t *testing.T) {
	limit := int64(32 << 20)
	m, err := cgroups.New(context.Background(), testCgroupPath(t), &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Delete()
	// Held on stdin until it is in the cgroup. Started and waited for
	// through the reaper, as the shim does: this package's tests reap
	// every child (service_linux_test.go), so os/exec's own wait could
	// find it gone.
	cmd := exec.Command("busybox", "sh", "-c", "read go; exec dd if=/dev/zero of=/dev/null bs=100M count=1")
	stdin, _ := cmd.StdinPipe()
	wait, err := reaperStart(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var w oomWatch
	if w.killLog, err = cgroups.OpenKillLog(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	defer w.stop()
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("go\n"))
	if status, err := wait(); err != nil || status != 128+int(syscall.SIGKILL) {
		t.Fatalf("dd was not OOM-killed: exit status %d (%v)", status, err)
	}
	if n, err := w.kills(m); err != nil || n != 1 {
		t.Fatalf("with the cgroup there: %d kills (%v), want 1", n, err)
	}
	if err := m.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.OOMKills(); err == nil {
		t.Fatal("the removed cgroup still has a count")
	}
	if n, err := w.kills(m); err != nil || n != 1 {
		t.Fatalf("with the cgroup gone: %d kills (%v), want 1", n, err)
	}
}

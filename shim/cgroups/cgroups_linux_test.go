package cgroups

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/internal/testutil"
)

func ptr[T any](v T) *T { return &v }

// testPath is a cgroup path private to this test; cleanup removes its
// parent from every hierarchy.
func testPath(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root for cgroups")
	}
	b := make([]byte, 4)
	rand.Read(b)
	parent := "/tupper-test-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		// Whatever a failed test left running in the cgroup goes first.
		if m, err := Load(parent+"/c", false); err == nil {
			m.Delete()
		}
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + parent)
		if d := "/sys/fs/cgroup" + parent; unified() {
			dirs = append(dirs, d)
		}
		for _, d := range dirs {
			for _, c := range append(subdirs(d), d) {
				if err := os.Remove(c); err != nil && !os.IsNotExist(err) {
					t.Errorf("removing %s: %v", c, err)
				}
			}
		}
	})
	return parent + "/c"
}

func subdirs(dir string) (out []string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// controllerFile reads a cgroup file of the container on v1 or v2.
func controllerFile(t *testing.T, m *Manager, v1controller, file string) string {
	t.Helper()
	dir := filepath.Join(mountpoint, v1controller, m.Path())
	if unified() {
		dir = filepath.Join(mountpoint, m.Path())
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// startHeld starts sh -c script blocked until release is called, so it can
// be put into the cgroup before it does anything.
func startHeld(t *testing.T, script string) (cmd *exec.Cmd, out *bytes.Buffer, exited <-chan struct{}, release func()) {
	t.Helper()
	cmd = exec.Command("busybox", "sh", "-c", "read go; "+script)
	stdin, _ := cmd.StdinPipe()
	out = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Reap as soon as it exits, as the shim's reaper does: a zombie still
	// counts as a member of its v1 cgroup.
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd, out, done, func() { io.WriteString(stdin, "go\n"); stdin.Close() }
}

func cpuTicks(t *testing.T, pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

// eventually polls ok every 20 ms for up to 10 s.
func eventually(ok func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// frozen reports what the kernel says of the cgroup's freezer.
func frozen(t *testing.T, m *Manager) bool {
	t.Helper()
	if unified() {
		return strings.Contains(controllerFile(t, m, "", "cgroup.events"), "frozen 1")
	}
	return controllerFile(t, m, "freezer", "freezer.state") == "FROZEN"
}

func TestLimitsStatsUpdateFreezeDelete(t *testing.T) {
	path := testPath(t)
	ctx := context.Background()
	m, err := New(ctx, path, &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr(int64(64 << 20))},
		Pids:   &specs.LinuxPids{Limit: ptr(int64(32))},
		CPU:    &specs.LinuxCPU{Shares: ptr(uint64(512)), Quota: ptr(int64(50000)), Period: ptr(uint64(100000))},
	}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkLimits(t, m)
	spin, spinExited := startSpinner(t, m)
	checkStats(t, m)
	if err := m.Update(ctx, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(128 << 20))}}); err != nil {
		t.Fatal(err)
	}
	if !unified() {
		if got := controllerFile(t, m, "memory", "memory.limit_in_bytes"); got != strconv.Itoa(128<<20) {
			t.Fatalf("after Update memory.limit_in_bytes = %s", got)
		}
	}
	checkFreezeThaw(t, m, spin)
	if err := m.Delete(); err != nil {
		t.Fatal(err)
	}
	<-spinExited
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + path); len(dirs) != 0 || exists("/sys/fs/cgroup"+path) {
		t.Fatalf("cgroup left after Delete: %v", dirs)
	}
	if _, err := Load(path, false); !errdefs.IsNotFound(err) && err == nil {
		t.Fatalf("Load after Delete: %v", err)
	}
}

// checkLimits reads back the limits New wrote.
func checkLimits(t *testing.T, m *Manager) {
	t.Helper()
	if unified() {
		if got := controllerFile(t, m, "", "memory.max"); got != strconv.Itoa(64<<20) {
			t.Fatalf("memory.max = %s", got)
		}
		return
	}
	for _, c := range []struct{ ctrl, file, want string }{
		{"memory", "memory.limit_in_bytes", strconv.Itoa(64 << 20)},
		{"pids", "pids.max", "32"},
		{"cpu", "cpu.shares", "512"},
		{"cpu", "cpu.cfs_quota_us", "50000"},
	} {
		if got := controllerFile(t, m, c.ctrl, c.file); got != c.want {
			t.Errorf("%s = %s, want %s", c.file, got, c.want)
		}
	}
}

// startSpinner starts, in m, a shell that holds 4 MiB it allocated there
// and spins; it returns once the cgroup holds the 4 MiB and the shell is
// its only process (its head|tr have come and gone, reaped: an exited
// child leaves cgroup.procs at once but counts in pids.current until its
// parent reaps it).
func startSpinner(t *testing.T, m *Manager) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	spin, _, exited, release := startHeld(t, "s=$(head -c 4194304 /dev/zero | tr '\\0' a); while :; do :; done")
	if err := m.Add(spin.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	var pids []int
	var err error
	if !eventually(func() bool {
		pids, err = m.Pids()
		return err == nil && len(pids) == 1 && pids[0] == spin.Process.Pid && memoryUsage(t, m) >= 4<<20 &&
			controllerFile(t, m, "pids", "pids.current") == "1"
	}) {
		t.Fatalf("Pids = %v, %v; want [%d]", pids, err, spin.Process.Pid)
	}
	return spin, exited
}

// memoryUsage is the cgroup's memory use, as the kernel counts it.
func memoryUsage(t *testing.T, m *Manager) int {
	t.Helper()
	file := "memory.usage_in_bytes"
	if unified() {
		file = "memory.current"
	}
	n, err := strconv.Atoi(controllerFile(t, m, "memory", file))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkStats wants real numbers for the spinner's cpu, memory and pids.
func checkStats(t *testing.T, m *Manager) {
	t.Helper()
	st, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	switch s := st.(type) {
	case *v1stats.Metrics:
		if s.CPU.Usage.Total == 0 || s.Memory.Usage.Usage < 4<<20 || s.Pids.Current != 1 || s.Pids.Limit != 32 {
			t.Fatalf("v1 metrics without real numbers: cpu %d mem %d pids %d/%d", s.CPU.Usage.Total, s.Memory.Usage.Usage, s.Pids.Current, s.Pids.Limit)
		}
	case *v2stats.Metrics:
		if s.CPU.UsageUsec == 0 || s.Memory.Usage < 4<<20 || s.Pids.Current != 1 {
			t.Fatalf("v2 metrics without real numbers: %+v", s)
		}
	default:
		t.Fatalf("Stats returned %T", st)
	}
}

// checkFreezeThaw freezes the spinner (the kernel reports the cgroup
// frozen and the process uses no cpu between two reads) and thaws it
// (it runs again).
func checkFreezeThaw(t *testing.T, m *Manager, spin *exec.Cmd) {
	t.Helper()
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if !frozen(t, m) {
		t.Fatal("Freeze returned, the kernel does not report the cgroup frozen")
	}
	before := cpuTicks(t, spin.Process.Pid)
	if after := cpuTicks(t, spin.Process.Pid); after != before {
		t.Fatalf("frozen process used cpu: %d -> %d ticks", before, after)
	}
	if err := m.Thaw(); err != nil {
		t.Fatal(err)
	}
	if frozen(t, m) {
		t.Fatal("Thaw returned, the kernel still reports the cgroup frozen")
	}
	if !eventually(func() bool { return cpuTicks(t, spin.Process.Pid) != before }) {
		t.Fatal("thawed process does not run")
	}
}

func TestOOMKillIsReported(t *testing.T) {
	path := testPath(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := New(ctx, path, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(32 << 20))}}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Delete()
	ooms := make(chan struct{}, 4)
	if err := m.WatchOOM(ctx, func() { ooms <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	// dd's 100 MiB block is one allocation the 32 MiB limit cannot hold.
	cmd, out, exited, release := startHeld(t, "exec dd if=/dev/zero of=/dev/null bs=100M count=1")
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	<-exited
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("dd was not OOM-killed: %v\n%s", cmd.ProcessState, out)
	}
	select {
	case <-ooms:
	case <-time.After(5 * time.Second):
		t.Fatal("no OOM event for an OOM-killed process")
	}
}

func TestPidsLimitStopsForks(t *testing.T) {
	path := testPath(t)
	m, err := New(context.Background(), path, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr(int64(8))}}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Delete()
	// A fork loop: each iteration leaves a sleeper behind.
	cmd, out, _, release := startHeld(t, "while :; do sleep 30 & done")
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	if !eventually(func() bool { return controllerFile(t, m, "pids", "pids.events") != "max 0" }) {
		t.Fatalf("the fork loop never hit the limit: pids.events %q\n%s", controllerFile(t, m, "pids", "pids.events"), out)
	}
	pids, _ := m.Pids()
	if len(pids) == 0 || len(pids) > 8 {
		t.Fatalf("%d processes in a cgroup limited to 8\n%s", len(pids), out)
	}
	// The container stays manageable: it can be frozen, listed and deleted.
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if err := m.Thaw(); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(); err != nil {
		t.Fatalf("deleting a cgroup under a fork loop: %v", err)
	}
}

func TestDeviceRules(t *testing.T) {
	if unified() {
		t.Log("unified host: device rules are enforced by eBPF; this test runs the same open calls")
	}
	path := testPath(t)
	m, err := New(context.Background(), path, &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Major: ptr(int64(1)), Minor: ptr(int64(3)), Access: "rwm"}, // /dev/null
		{Allow: true, Type: "c", Major: ptr(int64(1)), Minor: ptr(int64(8)), Access: "r"},   // /dev/random, read only
	}}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Delete()
	cmd, out, exited, release := startHeld(t, "echo x > /dev/null && echo null-ok; head -c1 /dev/zero >/dev/null && echo zero-ok; "+
		"head -c1 /dev/random >/dev/null && echo random-read; (exec 3<>/dev/random && echo random-rw); true")
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	<-exited
	if !strings.Contains(out.String(), "null-ok") || strings.Contains(out.String(), "zero-ok") ||
		!strings.Contains(out.String(), "random-read") || strings.Contains(out.String(), "random-rw") {
		t.Fatalf("device rules not enforced (want /dev/null allowed, /dev/zero denied, /dev/random read only):\n%s", out)
	}
	if !strings.Contains(out.String(), "not permitted") {
		t.Fatalf("opening a denied device did not fail with EPERM:\n%s", out)
	}
}

func TestRefusals(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root for cgroups")
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name, path string
		systemd    bool
		res        *specs.LinuxResources
		want       error
		msg        string
	}{
		{"cpus outside the host", "/tupper-refused/a", false, &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0-63"}}, errdefs.ErrInvalidArgument, "online"},
		{"bad cpu list", "/tupper-refused/a", false, &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "3-1"}}, errdefs.ErrInvalidArgument, "3-1"},
		{"net_cls", "/tupper-refused/a", false, &specs.LinuxResources{Network: &specs.LinuxNetwork{ClassID: ptr(uint32(1))}}, errdefs.ErrNotImplemented, "network"},
		{"relative path", "tupper/a", false, nil, errdefs.ErrInvalidArgument, "absolute"},
		{"dotdot path", "/tupper/../../a", false, nil, errdefs.ErrInvalidArgument, ".."},
		{"root cgroup", "/", false, nil, errdefs.ErrInvalidArgument, "root"},
		{"systemd path, cgroupfs driver", "system.slice:tupper:a", false, nil, errdefs.ErrInvalidArgument, "systemd"},
		{"bad systemd path", "/x/y", true, nil, errdefs.ErrInvalidArgument, "slice:prefix:name"},
		{"device type", "/tupper-refused/a", false, &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Type: "p", Access: "rwm"}}}, errdefs.ErrInvalidArgument, "devices[0]"},
		{"device access", "/tupper-refused/a", false, &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Access: "rwx"}}}, errdefs.ErrInvalidArgument, "devices[1]"},
		{"device major", "/tupper-refused/a", false, &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Type: "b", Major: ptr(int64(-7)), Access: "r"}}}, errdefs.ErrInvalidArgument, "major -7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(ctx, tc.path, tc.res, tc.systemd, 0)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v naming %q", err, tc.want, tc.msg)
			}
			if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/tupper-refused"); len(dirs) != 0 {
				t.Fatalf("refused cgroup was created: %v", dirs)
			}
		})
	}
	if !hasController("hugetlb") {
		_, err := New(ctx, "/tupper-refused/a", &specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 1 << 21}}}, false, 0)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "hugetlb") {
			t.Fatalf("hugetlb on a host without it: %v", err)
		}
	}
	if !exists("/run/systemd/system") {
		_, err := New(ctx, "system.slice:tupper:a", nil, true, 0)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "systemd is not running") {
			t.Fatalf("systemd driver without systemd: %v", err)
		}
	}
}

func TestExpandSlice(t *testing.T) {
	for in, want := range map[string]string{
		"system.slice":                   "/system.slice",
		"kubepods-besteffort-pod1.slice": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice",
		"-.slice":                        "/",
	} {
		if got := expandSlice(in); got != want {
			t.Errorf("expandSlice(%q) = %q, want %q", in, got, want)
		}
	}
}

// A CRI spec's device rules are just "deny all"; with runc's defaults
// appended, /dev/null and /dev/ptmx (exec -t) work and /dev/mem does not.
func TestDefaultDevicesAsRunc(t *testing.T) {
	path := testPath(t)
	m, err := New(context.Background(), path, WithDefaultDevices(&specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}}), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Delete()
	// /dev/mem itself may not exist on the host: a node of the same number.
	mem := filepath.Join(t.TempDir(), "mem")
	if err := unix.Mknod(mem, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 1))); err != nil {
		t.Fatal(err)
	}
	cmd, out, exited, release := startHeld(t, "echo > /dev/null && echo null-ok; exec 3<>/dev/ptmx && echo ptmx-ok; head -c1 "+mem+" >/dev/null 2>&1 && echo mem-open; true")
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	<-exited
	for _, want := range []string{"null-ok", "ptmx-ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("want %s:\n%s", want, out)
		}
	}
	if strings.Contains(out.String(), "mem-open") {
		t.Errorf("/dev/mem opened in a container whose spec allows no device:\n%s", out)
	}
}

// TestHaveClone3: this kernel (6.x) has clone3, and asking for it creates
// no process.
func TestHaveClone3(t *testing.T) {
	if !haveClone3() {
		t.Fatal("clone3 reported missing on a kernel that has it")
	}
}

package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/internal/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

const mib = 1 << 20

// cgroupMount is the --mount for what CRI puts in every container.
const cgroupMount = "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=nosuid:noexec:nodev:relatime:ro"

// TestCgroups: resource control end to end through containerd and ctr.
// ctr gives every container the cgroupsPath /<namespace>/<id>.
func TestCgroups(t *testing.T) {
	e := newEnv(t)
	if !e.cgroupV1() && !e.cgroupV2() {
		testutil.Require(t, "needs a cgroup v1 memory controller or a v2 hierarchy with one")
	}
	runSubtests(t, e, []subtest{
		{"oom-before-exit", testOomBeforeExit},
		{"pids-limit", testPidsLimit},
		{"metrics-grow", testMetricsGrow},
		{"update-memory", testUpdateMemory},
		{"pause-resume", testPauseResume},
		{"cgroupfs-like-runc", testCgroupfsLikeRunc},
		{"devices", testDevices},
		{"check-fails-create", testCheckFailsCreate},
		{"dead-shim-removes-cgroup", testDeadShimRemovesCgroup},
	})
}

func testOomBeforeExit(t *testing.T, e *env) {
	ev := e.events()
	// dd as init: its 100 MiB buffer is what the kernel kills for.
	out, code := e.run("oom1", []string{"--memory-limit", strconv.Itoa(32 * mib)},
		"dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
	if code != 137 {
		t.Fatalf("exit status %d, want 137 (OOM-killed); output %q", code, out)
	}
	lines := ev.waitFor(t, `/tasks/delete`, `"oom1"`)
	oom, exit := indexOf(lines, "/tasks/oom", `"oom1"`), indexOf(lines, "/tasks/exit", `"oom1"`)
	if oom < 0 || exit < 0 || oom > exit {
		t.Fatalf("want /tasks/oom before /tasks/exit (at %d and %d):\n%s", oom, exit, strings.Join(lines, "\n"))
	}
	e.noCgroup("oom1")
}

func testPidsLimit(t *testing.T, e *env) {
	// The inner shell forks sleeps until the limit stops it (ash
	// gives up at the first failed fork); pid 1 then keeps reaping
	// the orphans, forking one short sleep at a time.
	// ctr has no pids flag: the limit comes by Update (the API) before
	// the loop is let go.
	script := `while [ ! -e /tmp/go ]; do sleep 0.1; done; sh -c 'n=0; while [ $n -lt 200 ]; do sleep 3 & n=$((n+1)); done' 2>/dev/null; while :; do sleep 1; done`
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", image, "pids1", "sh", "-c", script)
	limit := int64(16)
	e.update("pids1", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}})
	if n := readInt(t, e.cgroupPath("pids", "pids1", "pids.max")); n != 16 {
		t.Fatalf("pids.max %d after update", n)
	}
	e.keptAfterReload(t, "pids1", "TasksMax", "pids.max", "16")
	e.mustCtr("task", "exec", "--exec-id", "go", "pids1", "touch", "/tmp/go")
	events := e.cgroupPath("pids", "pids1", "pids.events")
	waitFor(t, func() bool {
		b, _ := os.ReadFile(events)
		f := strings.Fields(string(b))
		return len(f) == 2 && f[0] == "max" && f[1] != "0"
	}, "the pids limit to refuse a fork (pids.events max > 0)")
	if n := readInt(t, e.cgroupPath("pids", "pids1", "pids.current")); n > 16 {
		t.Fatalf("pids.current %d above the limit of 16", n)
	}
	// Still manageable: the bomb's children go, exec, ps, kill and
	// delete work.
	waitFor(t, func() bool { return len(e.psPids("pids1")) <= 2 }, "the fork loop's sleeps to exit")
	if out := e.mustCtr("task", "exec", "--exec-id", "e1", "pids1", "echo", "alive"); out != "alive\n" {
		t.Fatalf("exec after the fork loop: %q", out)
	}
	if ps := e.psPids("pids1"); len(ps) == 0 || !slices.Contains(ps, e.taskPid("pids1")) {
		t.Fatalf("task ps %v", ps)
	}
	e.mustCtr("task", "kill", "-a", "-s", "KILL", "pids1")
	e.waitStopped("pids1")
	e.mustCtr("task", "delete", "pids1")
	e.mustCtr("containers", "rm", "pids1")
	e.noCgroup("pids1")
}

func testMetricsGrow(t *testing.T, e *env) {
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", image, "met1", "sleep", "1000")
	defer e.remove("met1")
	mem0, cpu0 := e.metrics("met1")
	// The exec joins the container's cgroup: the tmpfs pages it
	// writes and the cpu it burns are the container's.
	e.mustCtr("task", "exec", "--exec-id", "w1", "met1", "sh", "-c",
		`dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done`)
	mem1, cpu1 := e.metrics("met1")
	if mem1 < mem0+16*mib || cpu1 <= cpu0 {
		t.Fatalf("metrics did not grow with work: memory %d -> %d, cpu %d -> %d", mem0, mem1, cpu0, cpu1)
	}
}

func testUpdateMemory(t *testing.T, e *env) {
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", "--memory-limit", strconv.Itoa(96*mib),
		"--mount", cgroupMount, image, "upd1", "sleep", "1000")
	defer e.remove("upd1")
	grab := func(id string) int {
		_, err := e.ctr("task", "exec", "--exec-id", id, "upd1", "dd", "if=/dev/zero", "of=/dev/null", "bs=48M", "count=1")
		return exitCode(t, err)
	}
	if code := grab("g1"); code != 0 {
		t.Fatalf("48 MiB under a 96 MiB limit: exit %d", code)
	}
	limit := int64(32 * mib)
	e.update("upd1", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
	inside := "cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
	if e.cgroupV2() {
		// Without a cgroup namespace the mount shows the host's
		// hierarchy, as runc's does: the cgroup is at its full path.
		inside = `cat "/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/memory.max"`
	}
	if out := e.mustCtr("task", "exec", "--exec-id", "r1", "upd1", "sh", "-c", inside); strings.TrimSpace(out) != strconv.Itoa(32*mib) {
		t.Fatalf("limit seen inside after update: %q", out)
	}
	if code := grab("g2"); code != 137 {
		t.Fatalf("48 MiB after lowering the limit to 32 MiB: exit %d, want 137", code)
	}
	e.keptAfterReload(t, "upd1", "MemoryMax", "memory.max", strconv.Itoa(32*mib))
}

func testPauseResume(t *testing.T, e *env) {
	ev := e.events()
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", image, "pz1", "sh", "-c", "while :; do :; done")
	defer e.remove("pz1")
	usage := func() uint64 { _, cpu := e.metrics("pz1"); return cpu }
	e.mustCtr("task", "pause", "pz1")
	if st := e.taskStatus("pz1"); st != "PAUSED" {
		t.Fatalf("status %s after pause", st)
	}
	// The kernel reports the freeze done; the spinning loop then gets no
	// cpu time between two reads of it.
	if !e.frozen("pz1") {
		t.Fatalf("PAUSED, but the cgroup is not frozen")
	}
	u1 := usage()
	if u2 := usage(); u2 != u1 {
		t.Fatalf("cpu time advanced while paused: %d -> %d", u1, u2)
	}
	if out, err := e.ctr("task", "exec", "--exec-id", "p1", "pz1", "true"); err == nil || !strings.Contains(out, "paused") {
		t.Errorf("exec in a paused container: %v %q", err, out)
	}
	e.mustCtr("task", "resume", "pz1")
	if st := e.taskStatus("pz1"); st != "RUNNING" {
		t.Fatalf("status %s after resume", st)
	}
	waitFor(t, func() bool { return usage() > u1 }, "cpu time to advance after resume")
	lines := ev.waitFor(t, "/tasks/resumed", `"pz1"`)
	if p, r := indexOf(lines, "/tasks/paused", `"pz1"`), indexOf(lines, "/tasks/resumed", `"pz1"`); p < 0 || p > r {
		t.Fatalf("paused/resumed events:\n%s", strings.Join(lines, "\n"))
	}
}

func testCgroupfsLikeRunc(t *testing.T, e *env) {
	haveRunc(t)
	// ctr adds no cgroup mount by itself (CRI does): ask for one.
	cmd := `ls /sys/fs/cgroup; grep -v '^0::' /proc/self/cgroup; awk '$5 ~ /^\/sys\/fs\/cgroup/ {print $4, $5, $6}' /proc/self/mountinfo; ls /sys/fs/cgroup/memory | grep -c memory; cat /sys/fs/cgroup/memory/memory.limit_in_bytes`
	own := ":memory:/" + e.Namespace + "/ID\n"
	if e.cgroupV2() {
		// One hierarchy; ctr gives no cgroup namespace, so the container
		// sees the host's hierarchy and its cgroup's full path.
		cmd = `ls /sys/fs/cgroup; cat /proc/self/cgroup; awk '$5 ~ /^\/sys\/fs\/cgroup/ {print $4, $5, $6}' /proc/self/mountinfo; cat "/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/memory.max"`
		own = "0::" + strings.TrimPrefix(e.containerCgroup("", "ID"), "/sys/fs/cgroup") + "\n"
	}
	outs := map[string]string{}
	for _, rt := range []string{"tupper", "runc"} {
		id := "cgv-" + rt
		out, err := e.ctr("run", "--rm", "--runtime", "io.containerd."+rt+".v2", "--memory-limit", strconv.Itoa(64*mib), "--mount", cgroupMount, image, id, "sh", "-c", cmd)
		if err != nil {
			t.Fatalf("%s: %v %s", rt, err, out)
		}
		outs[rt] = strings.ReplaceAll(out, id, "ID")
	}
	if outs["tupper"] != outs["runc"] {
		t.Fatalf("tupper and runc differ\ntupper:\n%s\nrunc:\n%s", outs["tupper"], outs["runc"])
	}
	if !strings.Contains(outs["tupper"], own) || !strings.Contains(outs["tupper"], strconv.Itoa(64*mib)) {
		t.Fatalf("container does not see its own cgroup:\n%s", outs["tupper"])
	}
}

func testDevices(t *testing.T, e *env) {
	// ctr's default rules deny all but the standard nodes (mknod is
	// allowed): /dev/null's numbers open, /dev/loop-control's do not.
	// Only the device rules refuse that open (the driver asks for no
	// capability; without the driver the open fails otherwise).
	out, code := e.run("dev1", nil, "sh", "-c",
		"mknod /tmp/null c 1 3 && echo x > /tmp/null && echo null-ok; mknod /tmp/lc c 10 237 && (exec 3<>/tmp/lc && echo lc-open); echo done")
	if code != 0 || !strings.Contains(out, "null-ok") || strings.Contains(out, "lc-open") ||
		!strings.Contains(out, "/tmp/lc: Operation not permitted") || !strings.Contains(out, "done") {
		t.Fatalf("code %d output %q", code, out)
	}
}

func testCheckFailsCreate(t *testing.T, e *env) {
	out, code := e.run("cs1", []string{"--cpuset-cpus", "60-63"}, "true")
	if code == 0 || !strings.Contains(out, "linux.resources.cpu.cpus") || !strings.Contains(out, "online") {
		t.Fatalf("code %d output %q", code, out)
	}
	waitFor(t, func() bool { return len(e.stateMounts()) == 0 }, "no mounts left")
	e.noCgroup("cs1")
	e.ctr("containers", "rm", "cs1")
}

func testDeadShimRemovesCgroup(t *testing.T, e *env) {
	before := e.ShimPids()
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", image, "ds1", "sleep", "1000")
	mem := e.cgroupPath("memory", "ds1", "")
	if e.cgroupV2() {
		mem = e.cgroupPath("", "ds1", "")
	}
	if _, err := os.Stat(mem); err != nil {
		t.Fatalf("no cgroup while running: %v", err)
	}
	shim := e.newShim(before)
	syscall.Kill(shim, syscall.SIGKILL)
	waitFor(t, func() bool { _, err := os.Stat(mem); return os.IsNotExist(err) }, "shim delete to remove the cgroup")
	e.ctr("task", "delete", "ds1")
	e.ctr("containers", "rm", "ds1")
	e.noCgroup("ds1")
}

// frozen reports whether the kernel has frozen the container's cgroup.
func (e *env) frozen(id string) bool {
	e.t.Helper()
	if e.cgroupV2() {
		b, err := os.ReadFile(e.cgroupPath("", id, "cgroup.events"))
		if err != nil {
			e.t.Fatal(err)
		}
		return strings.Contains(string(b), "frozen 1")
	}
	b, err := os.ReadFile(e.cgroupPath("freezer", id, "freezer.state"))
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimSpace(string(b)) == "FROZEN"
}

func (e *env) cgroupV1() bool {
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes")
	return err == nil
}

func (e *env) cgroupV2() bool {
	b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	return err == nil && strings.Contains(string(b), "memory")
}

// cgroupPath is a file of the container's cgroup on the host (controller
// "" on v2).
func (e *env) cgroupPath(controller, id, file string) string {
	return filepath.Join(e.containerCgroup(controller, id), file)
}

// noCgroup fails when any hierarchy still has the container's cgroup, or
// systemd its scope.
func (e *env) noCgroup(id string) {
	e.t.Helper()
	left, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", e.Namespace, id))
	for _, d := range []string{filepath.Join("/sys/fs/cgroup", e.Namespace, id), e.containerCgroup("", id)} {
		if exists(d) {
			left = append(left, d)
		}
	}
	left = append(left, e.leftUnits(id)...)
	if len(left) > 0 {
		e.t.Fatalf("cgroups left: %v", left)
	}
}

func readInt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) psPids(id string) []int {
	var pids []int
	for _, l := range strings.Split(e.mustCtr("task", "ps", id), "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			if p, err := strconv.Atoi(f[0]); err == nil {
				pids = append(pids, p)
			}
		}
	}
	return pids
}

// remove kills and deletes a container and checks its cgroup is gone.
func (e *env) remove(id string) {
	e.ctr("task", "kill", "-s", "KILL", id)
	e.waitStopped(id)
	e.mustCtr("task", "delete", id)
	e.mustCtr("containers", "rm", id)
	e.noCgroup(id)
}

// metrics returns memory usage and cpu time from `ctr task metrics`.
func (e *env) metrics(id string) (mem, cpu uint64) {
	e.t.Helper()
	out := e.mustCtr("task", "metrics", "--format", "json", id)
	var m struct {
		Memory *struct {
			Usage json.RawMessage `json:"usage"`
		} `json:"memory"`
		CPU *struct {
			Usage     json.RawMessage `json:"usage"`
			UsageUsec uint64          `json:"usage_usec"`
		} `json:"cpu"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.Memory == nil || m.CPU == nil {
		e.t.Fatalf("metrics %q: %v", out, err)
	}
	// v1: memory.usage.usage and cpu.usage.total; v2: memory.usage and
	// cpu.usage_usec.
	var v1mem struct {
		Usage uint64 `json:"usage"`
	}
	var v1cpu struct {
		Total uint64 `json:"total"`
	}
	if json.Unmarshal(m.Memory.Usage, &v1mem) == nil && json.Unmarshal(m.CPU.Usage, &v1cpu) == nil {
		return v1mem.Usage, v1cpu.Total
	}
	json.Unmarshal(m.Memory.Usage, &mem)
	return mem, m.CPU.UsageUsec
}

// update is what `ctr task update` was: containerd's Tasks.Update with a
// *specs.LinuxResources, over gRPC.
func (e *env) update(id string, res *specs.LinuxResources) {
	e.t.Helper()
	conn, err := grpc.NewClient("unix://"+e.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	b, err := json.Marshal(res)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), e.Namespace), 30*time.Second)
	defer cancel()
	// The JSON-registered type containerd (core/runtime) decodes.
	a := &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: b}
	if _, err := tasks.NewTasksClient(conn).Update(ctx, &tasks.UpdateTaskRequest{ContainerID: id, Resources: a}); err != nil {
		e.t.Fatalf("update %s: %v", id, err)
	}
}

// eventLog is a running `ctr events`.
type eventLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *eventLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *eventLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(l.buf.String(), "\n")
}

// waitFor waits until an event line holds all of want and returns the
// lines so far.
func (l *eventLog) waitFor(t *testing.T, want ...string) []string {
	t.Helper()
	var lines []string
	waitFor(t, func() bool {
		lines = l.lines()
		return indexOf(lines, want...) >= 0
	}, fmt.Sprintf("event %v", want))
	return lines
}

// events starts `ctr events`; it is stopped by pid when the test ends.
func (e *env) events() *eventLog {
	e.t.Helper()
	l := &eventLog{}
	cmd := e.CtrCommand(context.Background(), "events")
	cmd.Stdout, cmd.Stderr = l, l
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	e.t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	// ctr events subscribes asynchronously; an event we cause now
	// must not be missed, so wait for one we make on purpose.
	e.mustCtr("containers", "create", image, "ev-probe", "true")
	e.mustCtr("containers", "rm", "ev-probe")
	l.waitFor(e.t, "/containers/delete")
	return l
}

func indexOf(lines []string, want ...string) int {
	for i, l := range lines {
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			return i
		}
	}
	return -1
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

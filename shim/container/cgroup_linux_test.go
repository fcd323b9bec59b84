package container

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/internal/testutil"
	"github.com/tupper/tupper/shim/cgroups"
	"github.com/tupper/tupper/shim/container/protocol"
	"golang.org/x/sys/unix"
)

// cgroupSpec is testSpec with ctr's cgroup mount and a pids limit.
func cgroupSpec(cgroupns bool, args ...string) *specs.Spec {
	spec := testSpec(args...)
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup",
		Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}})
	if cgroupns {
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	limit := int64(64)
	spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}}
	return spec
}

// testPlacer is a CgroupPlacer made of two functions; nil ones do nothing.
type testPlacer struct {
	join    func() (protocol.CgroupJoin, error)
	spawned func(pid int) error
}

func (p testPlacer) Join() (protocol.CgroupJoin, error) {
	if p.join == nil {
		return protocol.CgroupJoin{}, nil
	}
	return p.join()
}

func (p testPlacer) Spawned(pid int) error {
	if p.spawned == nil {
		return nil
	}
	return p.spawned(pid)
}

// withCgroup creates a container whose helpers Spawned moves into a fresh
// cgroup, and returns it with the helpers' pids as Spawned saw them.
func withCgroup(t *testing.T, spec *specs.Spec) (*run, *cgroups.Manager, *[]int) {
	t.Helper()
	return withCgroupBundle(t, newBundle(t), spec, false)
}

// withCgroupBundle with selfJoin makes the cgroup first and hands its
// tasks files to the helpers (CgroupPlacer.Join), as the shim does with
// the cgroupfs driver on v1; Spawned then only records the pids.
func withCgroupBundle(t *testing.T, bundle string, spec *specs.Spec, selfJoin bool) (*run, *cgroups.Manager, *[]int) {
	t.Helper()
	path := fmt.Sprintf("/tupper-test/%d", time.Now().UnixNano())
	var m *cgroups.Manager
	var spawned []int
	t.Cleanup(func() {
		if m != nil {
			if err := m.Delete(); err != nil {
				t.Error(err)
			}
		}
		if l, err := cgroups.Load("/tupper-test", false); err == nil {
			l.Delete()
		}
	})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	placer := testPlacer{spawned: func(pid int) error {
		spawned = append(spawned, pid)
		if selfJoin {
			return nil
		}
		if m == nil {
			if m, err = cgroups.New(context.Background(), path, spec.Linux.Resources, false, pid); err != nil {
				return err
			}
		}
		return m.Add(pid)
	}}
	if selfJoin {
		if m, err = cgroups.New(context.Background(), path, spec.Linux.Resources, false, 0); err != nil {
			t.Fatal(err)
		}
		if !m.JoinsAtSpawn() {
			t.Fatal("a cgroupfs cgroup on this v1 host offers no tasks files")
		}
		placer.join = func() (protocol.CgroupJoin, error) {
			files, err := m.JoinFiles()
			return protocol.CgroupJoin{TasksFiles: files}, err
		}
	}
	c, err := Create(Options{ID: "t", Bundle: bundle, Spec: spec, Stdio: Stdio{Stdout: w, Stderr: w}, Cgroup: placer})
	w.Close()
	if err != nil {
		r.Close()
		t.Fatalf("create: %v", err)
	}
	rr := &run{c: c, out: newOutBuffer(), r: r, end: make(chan struct{})}
	go func() { io.Copy(rr.out, r); close(rr.end) }()
	t.Cleanup(func() { c.Init().Signal(9); c.Init().Wait(); r.Close() })
	return rr, m, &spawned
}

func TestCgroupNamespaceAfterMove(t *testing.T) {
	for _, selfJoin := range []bool{false, true} {
		t.Run(fmt.Sprintf("selfJoin=%v", selfJoin), func(t *testing.T) { testCgroupNamespaceAfterMove(t, selfJoin) })
	}
}

func testCgroupNamespaceAfterMove(t *testing.T, selfJoin bool) {
	needRoot(t)
	spec := cgroupSpec(true, "sh", "-c", `grep -E ':(pids|memory):' /proc/self/cgroup; ls /sys/fs/cgroup/pids/pids.max; cat /sys/fs/cgroup/pids/pids.max; touch /sys/fs/cgroup/pids/x 2>/dev/null && echo rw || echo ro; sleep 100`)
	r, m, spawned := withCgroupBundle(t, newBundle(t), spec, selfJoin)
	if err := r.c.Start(); err != nil {
		t.Fatal(err)
	}
	pids, err := m.Pids()
	if err != nil || len(*spawned) != 1 || (*spawned)[0] != r.c.Pid() || !contains(pids, r.c.Pid()) {
		t.Fatalf("init %d, Spawned saw %v, cgroup holds %v (%v)", r.c.Pid(), *spawned, pids, err)
	}
	// An exec is moved in too, and sees the same namespace root.
	out, st := execOut(t, r.c, "cat", "/proc/self/cgroup")
	if st != 0 || !strings.Contains(out, ":pids:/\n") || len(*spawned) != 2 {
		t.Errorf("exec: status %d, Spawned saw %v, /proc/self/cgroup:\n%s", st, *spawned, out)
	}
	r.out.waitFor(t, "\nro\n")
	r.c.Init().Signal(9)
	_, got := r.wait(t)
	n := 0
	for _, l := range strings.Split(got, "\n") {
		if strings.Contains(l, ":pids:") || strings.Contains(l, ":memory:") {
			n++
			if !strings.HasSuffix(l, ":/") {
				t.Errorf("container sees %q, want its own cgroup as /", l)
			}
		}
	}
	if n != 2 {
		t.Errorf("no pids and memory lines in /proc/self/cgroup:\n%s", got)
	}
	if !strings.Contains(got, "/sys/fs/cgroup/pids/pids.max\n64\nro\n") {
		t.Errorf("cgroupfs in the container:\n%s", got)
	}
}

func TestCgroupBindWithoutNamespace(t *testing.T) {
	needRoot(t)
	spec := cgroupSpec(false, "sh", "-c", `grep ':pids:' /proc/self/cgroup; cat /sys/fs/cgroup/pids/pids.max; touch /sys/fs/cgroup/pids/x 2>/dev/null && echo rw || echo ro`)
	r, m, _ := withCgroup(t, spec)
	if err := r.c.Start(); err != nil {
		t.Fatal(err)
	}
	st, got := r.wait(t)
	if st != 0 || !strings.Contains(got, ":pids:"+m.Path()+"\n64\nro\n") {
		t.Errorf("status %d, want the host path %s and its own pids.max, read-only:\n%s", st, m.Path(), got)
	}
}

// TestCgroupSelfJoinChecked: a helper whose constructor wrote "0" to a
// file that does not list it afterwards (here a plain file: as if the
// write went nowhere) fails Create, saying why.
func TestCgroupSelfJoinChecked(t *testing.T) {
	needRoot(t)
	_, err := Create(Options{ID: "t", Bundle: newBundle(t), Spec: testSpec("true"),
		Cgroup: testPlacer{join: func() (protocol.CgroupJoin, error) {
			f, err := os.CreateTemp(t.TempDir(), "tasks")
			return protocol.CgroupJoin{TasksFiles: []*os.File{f}}, err
		}}})
	if err == nil || !strings.Contains(err.Error(), "not in its cgroup") {
		t.Fatalf("create: %v", err)
	}
}

// TestCgroupCloneIntoV2: with Join.Dir the init helper and an exec
// are born in that cgroup v2 directory (clone3 CLONE_INTO_CGROUP); an exec
// into a container with a cgroup namespace, whose parent thread joins that
// namespace first, is moved there instead. On a hybrid host such as this
// one the v2 hierarchy has no controllers but takes processes all the same.
func TestCgroupCloneIntoV2(t *testing.T) {
	for _, cgroupns := range []bool{false, true} {
		t.Run(fmt.Sprintf("cgroupns=%v", cgroupns), func(t *testing.T) { testCgroupCloneIntoV2(t, cgroupns) })
	}
}

func testCgroupCloneIntoV2(t *testing.T, cgroupns bool) {
	needRoot(t)
	root := "/sys/fs/cgroup/unified"
	var st unix.Statfs_t
	if unix.Statfs(root, &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		root = "/sys/fs/cgroup"
		if unix.Statfs(root, &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
			testutil.Require(t, "needs a cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
		}
	}
	name := fmt.Sprintf("tupper-test-%d", time.Now().UnixNano())
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 50 && os.Remove(dir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("cgroup %s left behind", dir)
		}
	})
	spec := testSpec("sh", "-c", "grep '^0::' /proc/self/cgroup; sleep 100")
	// Inside a cgroup namespace made in that cgroup, it is the root.
	want := "0::/" + name + "\n"
	if cgroupns {
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
		want = "0::/\n"
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	c, err := Create(Options{ID: "t", Bundle: newBundle(t), Spec: spec,
		Stdio: Stdio{Stdout: w, Stderr: w},
		Cgroup: testPlacer{join: func() (protocol.CgroupJoin, error) {
			f, err := os.Open(dir)
			return protocol.CgroupJoin{Dir: f}, err
		}}})
	w.Close()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	defer func() { c.Init().Signal(9); c.Init().Wait() }()
	procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if !strings.Contains("\n"+string(procs), fmt.Sprintf("\n%d\n", c.Pid())) {
		t.Fatalf("the created helper %d is not in %s: %q", c.Pid(), dir, procs)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	if line != want {
		t.Errorf("container's v2 cgroup line %q, want %q", line, want)
	}
	out, code := execOut(t, c, "grep", "^0::", "/proc/self/cgroup")
	if code != 0 || out != want {
		t.Errorf("exec: status %d, v2 cgroup line %q, want %q", code, out, want)
	}
	procs, _ = os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if n := len(strings.Fields(string(procs))); n != 1 {
		t.Errorf("%s holds %d processes after the exec ended, want the init only: %q", dir, n, procs)
	}
}

func TestSpawnedErrorFailsCreate(t *testing.T) {
	needRoot(t)
	var pid int
	_, err := Create(Options{ID: "t", Bundle: newBundle(t), Spec: testSpec("true"),
		Cgroup: testPlacer{spawned: func(p int) error { pid = p; return fmt.Errorf("no cgroup for you") }}})
	if err == nil || !strings.Contains(err.Error(), "no cgroup for you") {
		t.Fatalf("create: %v", err)
	}
	if pid == 0 {
		t.Fatal("Spawned not called")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("helper %d left behind", pid)
	}
}

// execOut runs args in c and returns its output and exit status.
func execOut(t *testing.T, c *Container, args ...string) (string, int) {
	t.Helper()
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	p, err := c.Exec(&specs.Process{Args: args, Env: []string{"PATH=/bin"}, Cwd: "/"}, Stdio{Stdout: pw, Stderr: pw})
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(pr)
	st, _, _ := p.Wait()
	return string(out), st
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

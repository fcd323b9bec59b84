package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestAlongsideStartsEarlyOnlyWhenSafe(t *testing.T) {
	hooks := &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/true"}}}
	ours := netnsOf(t, "/proc/self/ns/net")
	for _, tc := range []struct {
		name  string
		clone uintptr
		spec  func(*specs.Spec)
		early bool
	}{
		{"new netns by clone", unix.CLONE_NEWNET | unix.CLONE_NEWNS, nil, true},
		{"no new netns", unix.CLONE_NEWNS, nil, false},
		{"netns unshared later (joined userns)", 0, nil, false},
		{"createRuntime hook", unix.CLONE_NEWNET, func(s *specs.Spec) { s.Hooks = hooks }, false},
		{"poststart hook only", unix.CLONE_NEWNET, func(s *specs.Spec) { s.Hooks = &specs.Hooks{Poststart: hooks.CreateRuntime} }, true},
		{"net sysctl", unix.CLONE_NEWNET, func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"net.ipv6.conf.all.disable_ipv6": "1"} }, false},
		{"other sysctl", unix.CLONE_NEWNET, func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"kernel.msgmax": "8192"} }, true},
	} {
		spec := testSpec("true")
		if tc.spec != nil {
			tc.spec(spec)
		}
		for _, ready := range []bool{true, false} {
			var ran []uint64
			a := alongside{pid: os.Getpid(), alive: func() error { return nil }, fn: func(netns string) error {
				ran = append(ran, netnsOf(t, netns))
				return nil
			}}
			if err := a.startEarly(&nsPlan{clone: tc.clone}, spec); err != nil {
				t.Fatal(err)
			}
			if early := a.done != nil; early != tc.early {
				t.Errorf("%s: started early %v, want %v", tc.name, early, tc.early)
			}
			if err := a.finish(ready); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			// Early, it runs (and is waited for) even if the helper
			// then fails; late, only for a helper that got to Ready.
			if want := tc.early || ready; len(ran) != 0 != want || (want && (len(ran) != 1 || ran[0] != ours)) {
				t.Errorf("%s, ready %v: ran on %v, want once (%v) on %d", tc.name, ready, ran, want, ours)
			}
			if a.netns != nil && a.netns.Close() == nil {
				t.Errorf("%s, ready %v: finish left the namespace open", tc.name, ready)
			}
		}
	}
}

func TestAlongsideRefusesAHelperThatIsGone(t *testing.T) {
	gone := errors.New("reaped")
	fds := func() int { e, _ := os.ReadDir("/proc/self/fd"); return len(e) }
	before := fds()
	a := alongside{pid: os.Getpid(), alive: func() error { return gone }, fn: func(string) error {
		t.Error("ran for a helper that is gone")
		return nil
	}}
	if err := a.startEarly(&nsPlan{clone: unix.CLONE_NEWNET}, testSpec("true")); !errors.Is(err, gone) {
		t.Errorf("early: %v, want the helper's error", err)
	}
	a.done = nil
	if err := a.finish(true); !errors.Is(err, gone) {
		t.Errorf("late: %v, want the helper's error", err)
	}
	if after := fds(); after != before {
		t.Errorf("%d fds before, %d after: the namespace was left open", before, after)
	}
}

// netnsOf is the inode of the network namespace at path.
func netnsOf(t *testing.T, path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestAlongsideRunsInTheContainersNetns(t *testing.T) {
	needRoot(t)
	for _, late := range []bool{false, true} {
		spec := testSpec("true")
		if late {
			spec.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
		}
		c := createCheckingAlongside(t, newBundle(t), spec, fmt.Sprintf("late %v", late))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if st, _, _ := c.Init().Wait(); st != 0 {
			t.Errorf("late %v: exit status %d", late, st)
		}
	}
}

// TestAlongsideWaitsForAnUnsharedNetns: the new network namespace of a
// container that joins a user namespace is made by the helper's
// constructor, after the clone. Alongside must get that one, never the one
// the helper starts in (this process's).
func TestAlongsideWaitsForAnUnsharedNetns(t *testing.T) {
	needRoot(t)
	holder, _ := startUserns(t, usernsSpec("sleep", "100"))
	spec := testSpec("true")
	// No pid namespace: a joined or unshared one would make the parent
	// wait for the constructor's fork, after its unshare. And so no
	// /proc, which only the pid namespace's owner may mount.
	spec.Linux.Namespaces = slices.DeleteFunc(spec.Linux.Namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == specs.PIDNamespace })
	spec.Mounts = slices.DeleteFunc(spec.Mounts, func(m specs.Mount) bool { return m.Type == "proc" })
	spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths = nil, nil
	joinUserns(spec, holder.c.Pid())
	c := createCheckingAlongside(t, usernsBundle(t), spec, "joined user namespace")
	c.Init().Signal(unix.SIGKILL)
	c.Init().Wait()
}

// createCheckingAlongside creates a container whose Alongside records the
// network namespace it gets, and checks that it ran once, on the init's
// namespace, which is not this process's.
func createCheckingAlongside(t *testing.T, bundle string, spec *specs.Spec, what string) *Container {
	t.Helper()
	var got []uint64
	c, err := Create(Options{ID: "t", Bundle: bundle, Spec: spec, Alongside: func(netns string) error {
		got = append(got, netnsOf(t, netns))
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	want, ours := netnsOf(t, fmt.Sprintf("/proc/%d/ns/net", c.Pid())), netnsOf(t, "/proc/self/ns/net")
	if len(got) != 1 || got[0] != want || want == ours {
		t.Errorf("%s: ran on namespaces %v, want once on the init's %d (this process's is %d)", what, got, want, ours)
	}
	return c
}

func TestAlongsideFailureFailsCreate(t *testing.T) {
	needRoot(t)
	broken := errors.New("no network for you")
	var helpers []int
	c, err := Create(Options{ID: "t", Bundle: newBundle(t), Spec: testSpec("true"), Alongside: func(string) error {
		helpers = childrenOf(t, os.Getpid())
		return broken
	}})
	if !errors.Is(err, broken) || c != nil {
		t.Fatalf("Create: %v, %v; want the Alongside error", c, err)
	}
	if len(helpers) == 0 {
		t.Fatal("no helper while Alongside ran")
	}
	// Killed and reaped: no child, not even a zombie, is left.
	if left := childrenOf(t, os.Getpid()); len(left) > 0 {
		t.Errorf("children %v left (the helper was %v)", left, helpers)
	}
}

// childrenOf lists the children of pid, zombies included, whichever of its
// threads started them.
func childrenOf(t *testing.T, pid int) []int {
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil || len(files) == 0 {
		t.Fatalf("no threads of %d: %v", pid, err)
	}
	var kids []int
	for _, file := range files {
		b, _ := os.ReadFile(file) // a thread that exited meanwhile has none
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			kids = append(kids, n)
		}
	}
	return kids
}

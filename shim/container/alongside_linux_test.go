package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestAlongsideStartsEarlyOnlyWhenSafe(t *testing.T) {
	hooks := &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/true"}}}
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
		ran := make(chan string, 1)
		a := alongside{fn: func(netns string) error { ran <- netns; return nil }}
		if err := a.hold(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		want := a.path()
		a.startEarly(&nsPlan{clone: tc.clone}, spec)
		if early := a.done != nil; early != tc.early {
			t.Errorf("%s: started early %v, want %v", tc.name, early, tc.early)
		}
		if err := a.finish(true); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if got := <-ran; got != want {
			t.Errorf("%s: ran on %s, want %s", tc.name, got, want)
		}
		if err := a.netns.Close(); err == nil {
			t.Errorf("%s: finish left the namespace open", tc.name)
		}
	}
	// A helper that never got to Ready: an early fn is waited for, a
	// late one not run.
	a := alongside{fn: func(string) error { t.Error("ran for a failed helper"); return nil }}
	if err := a.hold(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	a.startEarly(&nsPlan{}, testSpec("true"))
	if err := a.finish(false); err != nil {
		t.Error(err)
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
		var got []uint64
		c, err := Create(Options{ID: "t", Bundle: newBundle(t), Spec: spec, Alongside: func(netns string) error {
			got = append(got, netnsOf(t, netns))
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		want := netnsOf(t, fmt.Sprintf("/proc/%d/ns/net", c.Pid()))
		if len(got) != 1 || got[0] != want || want == netnsOf(t, "/proc/self/ns/net") {
			t.Errorf("late %v: ran on namespaces %v, want once on the init's %d (not this process's)", late, got, want)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if st, _, _ := c.Init().Wait(); st != 0 {
			t.Errorf("late %v: exit status %d", late, st)
		}
	}
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

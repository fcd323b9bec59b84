package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/testutil"
)

// loadSize is how many containers each round starts and removes, 8 at a
// time, and how many rounds: 24 x 1 in make test, 200 x 3 with make load
// (TUPPER_LOAD_CONTAINERS, TUPPER_LOAD_ROUNDS).
func loadSize() (containers, rounds int) {
	containers, rounds = 24, 1
	if n, err := strconv.Atoi(os.Getenv("TUPPER_LOAD_CONTAINERS")); err == nil && n > 0 {
		containers = n
	}
	if n, err := strconv.Atoi(os.Getenv("TUPPER_LOAD_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	return containers, rounds
}

// leftovers is everything a container could leave on the machine.
type leftovers struct {
	mounts, snapshots, subvolumes, veths, addresses, shims, cgroups []string
}

func (e *Env) leftovers() leftovers {
	e.t.Helper()
	var l leftovers
	mps, _ := testutil.MountsUnder(e.Dir)
	for _, m := range mps {
		if m != e.SnapshotterRoot {
			l.mounts = append(l.mounts, m)
		}
	}
	layers := 0
	for _, s := range snapshotLines(e.MustCtr("snapshots", "--snapshotter", e.Snapshotter, "ls")) {
		if !strings.HasSuffix(s, "Committed") {
			l.snapshots = append(l.snapshots, s) // image layers stay; nothing else may
		} else {
			layers++
		}
	}
	// Image layers stay, as subvolumes named by their id where they were
	// made (active/<id>; committed/<id> in roots of earlier versions), and
	// so may one spare snapshot of each in spare/, named <layer id>.<...>
	// (made ahead of a container's Prepare; it goes with its layer). A
	// container that took a spare also lives in spare/: a second one of a
	// layer is a leak.
	ids := map[string]bool{}
	var kept, spares []string
	for _, s := range e.Subvolumes() {
		if strings.Contains(s, "spare/") {
			spares = append(spares, s)
		} else {
			kept = append(kept, s)
			ids[filepath.Base(s)] = true
		}
	}
	if len(kept) != layers {
		l.subvolumes = append(l.subvolumes, fmt.Sprintf("%d subvolumes for %d layers: %s", len(kept), layers, strings.Join(kept, " ")))
	}
	seen := map[string]bool{}
	for _, s := range spares {
		if parent, _, _ := strings.Cut(filepath.Base(s), "."); !ids[parent] || seen[parent] {
			l.subvolumes = append(l.subvolumes, s)
		} else {
			seen[parent] = true
		}
	}
	if e.Bridge != "" {
		out, _ := exec.Command("ip", "-o", "link", "show", "master", e.Bridge).Output()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" {
				l.veths = append(l.veths, line)
			}
		}
	}
	entries, _ := os.ReadDir(filepath.Join(e.IPAMDir(), e.Bridge, "ipv4"))
	for _, en := range entries {
		if strings.Count(en.Name(), ".") == 3 {
			l.addresses = append(l.addresses, en.Name())
		}
	}
	for _, pid := range e.ShimPids() {
		l.shims = append(l.shims, strconv.Itoa(pid))
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/" + e.Namespace + "/*")
	for _, c := range cgs {
		if st, err := os.Stat(c); err == nil && st.IsDir() {
			l.cgroups = append(l.cgroups, c)
		}
	}
	return l
}

// settledLeftovers runs containerd's garbage collection, waits (up to 30 s)
// for what is removed asynchronously, then reports what is left.
func (e *Env) settledLeftovers(image string) string {
	e.t.Helper()
	// Removing a throwaway tag with --sync runs containerd's garbage
	// collection now, which removes unreferenced snapshots from the
	// snapshotter; otherwise it runs when containerd next schedules it.
	e.MustCtr("images", "tag", "--force", image, "tupper.local/gc-trigger:latest")
	e.MustCtr("images", "rm", "--sync", "tupper.local/gc-trigger:latest")
	var l string
	waitUntil(e.t, 30*time.Second, func() bool { l = e.leftovers().String(); return l == "" }, "")
	return l
}

func (l leftovers) String() string {
	var b strings.Builder
	for name, list := range map[string][]string{"mounts": l.mounts, "snapshots": l.snapshots, "subvolumes": l.subvolumes,
		"veths": l.veths, "addresses": l.addresses, "shims": l.shims, "cgroups": l.cgroups} {
		if len(list) > 0 {
			sort.Strings(list)
			fmt.Fprintf(&b, "%s: %s\n", name, strings.Join(list, ", "))
		}
	}
	return b.String()
}

// TestLoad starts and removes containers (tupper runtime, tupper
// snapshotter) 8 at a time, and after each round finds nothing left.
func TestLoad(t *testing.T) {
	e := NewEnv(t)
	e.requireTupper()
	tupper := e.TupperRuntime()
	image := e.importImage("busybox")
	if l := e.leftovers().String(); l != "" {
		t.Fatalf("leftovers before the first container:\n%s", l)
	}
	containers, rounds := loadSize()
	loopsBefore, _ := exec.Command("losetup", "-a").Output()
	for round := 1; round <= rounds; round++ {
		ids := make(chan string)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failures []string
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for id := range ids {
					// Start, check it runs, stop and remove.
					out, err := e.Ctr(append(append([]string{"run", "--rm", "--snapshotter", "tupper"}, tupper...),
						image, id, "sh", "-c", "ip -4 -o addr show eth0 | grep -q inet && echo up")...)
					if err != nil || out != "up\n" {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%s: %v %q", id, err, out))
						mu.Unlock()
					}
				}
			}()
		}
		for i := 0; i < containers; i++ {
			ids <- fmt.Sprintf("load-%d-%d", round, i)
		}
		close(ids)
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("round %d: %d of %d containers failed, e.g. %s", round, len(failures), containers, failures[0])
		}
		if l := e.settledLeftovers(image); l != "" {
			t.Fatalf("after round %d (%d containers): left behind:\n%s", round, containers, l)
		}
	}
	// Only devices new since the start and backed by a tupper file count:
	// other programs on a shared machine attach and detach their own.
	loopsAfter, _ := exec.Command("losetup", "-a").Output()
	for _, l := range strings.Split(string(loopsAfter), "\n") {
		if l != "" && !strings.Contains(string(loopsBefore), l) && strings.Contains(l, "tupper") {
			t.Fatalf("loop device added: %s\nbefore:\n%s", l, loopsBefore)
		}
	}
	t.Logf("%d rounds of %d containers, 8 at a time: nothing left behind", rounds, containers)
}

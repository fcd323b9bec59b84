package harness

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tupper/tupper/internal/testutil"
)

// cleanup undoes Start, reporting to the test that called it: tasks and
// containers left in the namespace, shims that outlive them (an error:
// a shim must exit once its containers are gone), the daemons, mounts
// (the network namespace's too), the loopback btrfs, cgroups, the bridge
// and Dir.
func (e *Env) cleanup() {
	t := e.owner
	if t.Failed() {
		for _, d := range e.daemons {
			t.Logf("--- %s log (last 60 lines of %s) ---\n%s", d.Name, d.Log, d.Tail(60))
		}
	}
	namespaces := []string{e.Namespace}
	if e.containerd != nil {
		namespaces = e.namespaces()
		for _, ns := range namespaces {
			e.removeContainers(ns)
		}
		e.waitShimsGone()
	}
	e.StopContainerd(t)
	e.killShims() // those of a containerd the test left stopped
	if e.snapshot != nil {
		e.snapshot.Stop(t, 10*time.Second)
	}
	e.killByPidFiles(filepath.Join(e.Dir, "containerd", "state"))
	e.unmountAll()
	if e.undoBtrfs != nil {
		if err := e.undoBtrfs(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	for _, ns := range namespaces {
		testutil.RemoveCgroups(t, ns)
	}
	// In a network namespace of its own (Options.Netns) the bridge went
	// with it; a host link of that name is not this Env's.
	if e.Netns == "" {
		if err := deleteLink(e.Bridge); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	if t.Failed() && testutil.Keep() {
		t.Logf("cleanup: keeping %s (%s=1)", e.Dir, testutil.EnvKeep)
		return
	}
	if err := os.RemoveAll(e.Dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// namespaces lists Namespace and the containerd namespaces a test made
// next to it (CtrIn): those named Namespace-<suffix>. Others, which no
// test of this Env makes, are not its to clean up.
func (e *Env) namespaces() []string {
	namespaces := []string{e.Namespace}
	out, err := e.Ctr("namespaces", "ls", "-q")
	if err != nil {
		e.owner.Logf("cleanup: %v", err)
	}
	for _, ns := range strings.Fields(out) {
		if strings.HasPrefix(ns, e.Namespace+"-") {
			namespaces = append(namespaces, ns)
		}
	}
	return namespaces
}

// removeContainers force-deletes the tasks and containers a test left in
// containerd namespace ns.
func (e *Env) removeContainers(ns string) {
	if out, err := e.CtrIn(ns, "task", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			if _, err := e.CtrIn(ns, "task", "delete", "-f", id); err != nil {
				e.owner.Logf("cleanup: %v", err)
			}
		}
	}
	if out, err := e.CtrIn(ns, "containers", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			if _, err := e.CtrIn(ns, "containers", "rm", id); err != nil {
				e.owner.Logf("cleanup: %v", err)
			}
		}
	}
}

// waitShimsGone gives the shims of deleted containers a few seconds to
// exit; a shim still running then is a leak, which killShims reports.
func (e *Env) waitShimsGone() {
	deadline := time.Now().Add(10 * time.Second)
	for len(e.ShimPids()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	e.killShims()
}

// killShims reports and kills every shim of this Env still running.
func (e *Env) killShims() {
	for _, pid := range e.ShimPids() {
		e.owner.Errorf("cleanup: shim %d still running after its containers were deleted; killing it", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// killByPidFiles SIGKILLs every process named by a shim.pid or init.pid
// file below dir: container processes a killed shim left, of this Env only.
func (e *Env) killByPidFiles(dir string) {
	_ = filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() || (de.Name() != "shim.pid" && de.Name() != "init.pid") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		// runc writes a number, tupper a JSON record (shim/bundle.Init).
		var pid int
		if json.Unmarshal(b, &pid) != nil {
			var rec struct{ Pid int }
			json.Unmarshal(b, &rec)
			pid = rec.Pid
		}
		if pid > 1 && syscall.Kill(pid, syscall.SIGKILL) == nil {
			e.owner.Logf("cleanup: killed leftover pid %d (%s)", pid, p)
		}
		return nil
	})
}

// unmountAll unmounts everything below Dir but the loopback btrfs itself
// (undoBtrfs's), deepest first.
func (e *Env) unmountAll() {
	mps, err := testutil.MountsUnder(e.Dir)
	if err != nil {
		e.owner.Errorf("cleanup: %v", err)
	}
	slices.SortFunc(mps, func(a, b string) int { return len(b) - len(a) })
	for _, mp := range mps {
		if mp == e.SnapshotterRoot && e.undoBtrfs != nil {
			continue
		}
		if err := syscall.Unmount(mp, 0); err != nil {
			e.owner.Logf("cleanup: umount %s: %v; detaching lazily", mp, err)
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
				e.owner.Errorf("cleanup: umount -l %s: %v", mp, err)
			}
		}
	}
}

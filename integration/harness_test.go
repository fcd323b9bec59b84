package integration

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/harness"
	"github.com/tupper/tupper/internal/testutil"
)

// Env is a private containerd with the tupper snapshotter on a loopback
// btrfs (internal/harness), seen from one test: t is the test or subtest
// its failing calls report to (For gives a subtest its own view).
type Env struct {
	*harness.Env
	t *testing.T
}

// NewEnv starts containerd and the tupper snapshotter (or, with
// TUPPER_TEST_SNAPSHOTTER=btrfs, containerd's built-in btrfs one) for t.
func NewEnv(t *testing.T) *Env {
	t.Helper()
	return &Env{Env: harness.Start(t, harness.Options{Snapshotter: harness.Tupper}), t: t}
}

// For is this Env as seen from subtest t.
func (e *Env) For(t *testing.T) *Env { return &Env{Env: e.Env, t: t} }

// requireTupper skips, loudly (testutil.Require), a test of what only
// tupper's snapshotter does when the Env runs containerd's built-in one.
func (e *Env) requireTupper() {
	e.t.Helper()
	if e.Snapshotter != harness.Tupper {
		testutil.Require(e.t, "tests tupper's snapshotter, not "+e.Snapshotter+" ("+harness.EnvSnapshotter+")")
	}
}

// MustCtr is ctr that fails the test on error.
func (e *Env) MustCtr(args ...string) string {
	e.t.Helper()
	return e.Env.MustCtr(e.t, args...)
}

// importImage builds the image of the given kind and imports it into the
// Env's snapshotter, returning its name.
func (e *Env) importImage(kind string) string {
	e.t.Helper()
	return e.ImportImage(e.t, kind)
}

// RestartSnapshotter restarts the tupper snapshotter daemon.
func (e *Env) RestartSnapshotter() {
	e.t.Helper()
	e.Env.RestartSnapshotter(e.t)
}

// Subvolumes lists the btrfs subvolumes under the snapshotter root, as
// paths relative to it.
func (e *Env) Subvolumes() []string {
	e.t.Helper()
	out, err := exec.Command("btrfs", "subvolume", "list", "-o", e.SnapshotterRoot).CombinedOutput()
	if err != nil {
		e.t.Fatalf("btrfs subvolume list: %v\n%s", err, out)
	}
	var subs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if i := strings.Index(line, " path "); i >= 0 {
			subs = append(subs, line[i+len(" path "):])
		}
	}
	return subs
}

// waitNoSubvolumes waits for the snapshotter's asynchronous subvolume
// deletion and returns what is left after timeout.
func (e *Env) waitNoSubvolumes(timeout time.Duration) []string {
	e.t.Helper()
	var subs []string
	waitUntil(e.t, timeout, func() bool { subs = e.Subvolumes(); return len(subs) == 0 }, "")
	return subs
}

// waitUntil polls ok until it holds or timeout passes. With a description
// it fails the test on timeout; without one it just returns.
func waitUntil(t *testing.T, timeout time.Duration, ok func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			if what != "" {
				t.Fatalf("timed out after %s waiting for %s", timeout, what)
			}
			return
		}
	}
}

package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tupper/tupper/internal/harness"
)

// TestShimGroupingNamespace: with the runtime option ShimGrouping =
// "namespace" every container of the namespace is served by one shim,
// whatever its group annotations; containers come and go while it runs
// (a `run --rm` between them joins and leaves it), and it exits with the
// last one. An unknown grouping fails the start, naming the value.
func TestShimGroupingNamespace(t *testing.T) {
	e := newEnv(t)
	cfg := e.runtimeConfigWith(t, "grouped.toml", `ShimGrouping = "namespace"`)
	run := func(args ...string) (string, error) {
		a := append([]string{"run", "--runtime", harness.TupperRuntimeType, "--runtime-config-path", cfg}, args...)
		return e.ctr(a...)
	}
	before := len(e.ShimPids())
	for _, c := range [][]string{{"n1"}, {"n2", "--annotation", "io.containerd.tupper.v2.group=other"}, {"n3", "--annotation", "io.kubernetes.cri.sandbox-id=pod"}} {
		args := append(append([]string{"-d"}, c[1:]...), image, c[0], "sleep", "1000")
		if out, err := run(args...); err != nil {
			t.Fatalf("run %s: %v\n%s", c[0], err, out)
		}
	}
	shims := len(e.ShimPids()) - before
	if shims != 1 {
		t.Fatalf("%d shims for three containers of one namespace, want 1", shims)
	}
	if out, err := run("--rm", image, "n4", "echo", "joined"); err != nil || out != "joined\n" {
		t.Fatalf("run --rm beside the others: %v %q", err, out)
	}
	for i, id := range []string{"n1", "n2", "n3"} {
		if n := len(e.ShimPids()) - before; n != 1 {
			t.Fatalf("before deleting %s: %d shims, want the one", id, n)
		}
		e.mustCtr("task", "kill", "-s", "KILL", id)
		e.waitStopped(id)
		e.mustCtr("task", "delete", id)
		e.mustCtr("containers", "rm", id)
		if i < 2 && len(e.ShimPids())-before != 1 {
			t.Fatalf("the namespace's shim went with %s while others run", id)
		}
	}
	waitFor(t, func() bool { return len(e.ShimPids()) == before }, "the namespace's shim to exit with its last container")

	bad := e.runtimeConfigWith(t, "badgroup.toml", `ShimGrouping = "node"`)
	out, err := e.ctr("run", "--rm", "--runtime", harness.TupperRuntimeType, "--runtime-config-path", bad, image, "n5", "true")
	if err == nil || !strings.Contains(out, `ShimGrouping "node"`) {
		t.Fatalf("unknown grouping: %v\n%s", err, out)
	}
	if n := len(e.ShimPids()) - before; n != 0 {
		t.Fatalf("%d shims left after a refused grouping", n)
	}
}

// runtimeConfigWith writes the env's runtime options file plus line to a
// file of its own, name, and returns its path.
func (e *env) runtimeConfigWith(t *testing.T, name, line string) string {
	t.Helper()
	b, err := os.ReadFile(e.RuntimeConfig)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.Dir, name)
	if err := os.WriteFile(path, append(b, line+"\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

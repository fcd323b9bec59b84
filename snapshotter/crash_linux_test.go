package snapshotter

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
)

// The crash test runs scenario() in a child process that SIGKILLs itself at
// one step boundary, then reopens the root like a restarted daemon would.
const (
	envCrashRoot = "TUPPER_CRASH_ROOT"
	envCrashStep = "TUPPER_CRASH_STEP"
	envCrashSkip = "TUPPER_CRASH_SKIP"
)

var layerContent = bytes.Repeat([]byte("tupper layer content\n"), 4096)

// scenario walks through every kind of operation with keys suffixed by tag.
func scenario(ctx context.Context, s *Snapshotter, tag string) error {
	k := func(name string) string { return name + "-" + tag }
	mounts, err := s.Prepare(ctx, k("layer-active"), "")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(mounts[0].Source, "data"), layerContent, 0o644); err != nil {
		return err
	}
	if err := s.Commit(ctx, k("layer"), k("layer-active")); err != nil {
		return err
	}
	if _, err := s.View(ctx, k("view"), k("layer")); err != nil {
		return err
	}
	// The second container starts a spare of the layer; the third takes it
	// (waiting for it if it is still being made).
	for _, c := range []string{"container", "container2", "container3"} {
		if _, err := s.Prepare(ctx, k(c), k("layer")); err != nil {
			return err
		}
	}
	for _, r := range []string{"view", "container", "container2", "container3"} {
		if err := s.Remove(ctx, k(r)); err != nil {
			return err
		}
	}
	return nil
}

// TestMain lets the test binary serve as the children of the crash and
// stress tests: with envCrashRoot it runs crashChild, with envServeRoot it
// serves the snapshotter over gRPC, instead of running the tests.
func TestMain(m *testing.M) {
	if root := os.Getenv(envCrashRoot); root != "" {
		crashChild(root)
	}
	if root := os.Getenv(envServeRoot); root != "" {
		serveChild(root) // the stress test's daemon
	}
	os.Exit(m.Run())
}

// crashChild runs scenario() and SIGKILLs itself at the chosen step. It
// never returns: it dies, or exits 3 if the step was never reached.
func crashChild(root string) {
	ctx := context.Background()
	s, err := NewSnapshotter(ctx, root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	step := os.Getenv(envCrashStep)
	skip, _ := strconv.Atoi(os.Getenv(envCrashSkip))
	s.step = func(name string) {
		if name != step {
			return
		}
		if skip > 0 {
			skip--
			return
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns: the process dies here, mid-operation
	}
	err = scenario(ctx, s, "crashed")
	fmt.Fprintf(os.Stderr, "crash step %s (skip %s) was never reached (scenario: %v)\n", step, os.Getenv(envCrashSkip), err)
	os.Exit(3)
}

func TestCrashRecovery(t *testing.T) {
	fsRoot := newBtrfs(t, 512<<20)
	// survives names a snapshot whose write returned before the crash,
	// lost one whose write had not (both without the "-crashed" suffix).
	points := []struct {
		step           string
		skip           int // crash at the (skip+1)th time the step is reached
		survives, lost string
	}{
		{"create:subvolume", 0, "", "layer-active"},         // Prepare of the layer, before metadata commit
		{"create:subvolume", 1, "layer", "view"},            // View (no subvolume of its own)
		{"create:subvolume", 2, "view", "container"},        // Prepare of the container
		{"create:subvolume", 4, "container2", "container3"}, // Prepare of container3, which took the spare
		{"create:committed", 0, "layer-active", ""},
		{"create:committed", 1, "view", ""},
		{"create:committed", 4, "container3", ""},
		{"commit:metadata", 0, "layer-active", "layer"},    // metadata written, not committed
		{"commit:committed", 0, "layer", "layer-active"},   // metadata committed, subvolume not yet read-only
		{"remove:committed", 0, "container", "view"},       // view gone from metadata
		{"remove:committed", 1, "container2", "container"}, // container gone from metadata, subvolume still there
		{"remove:committed", 3, "layer", "container3"},     // container3 (in spare/) gone from metadata
		// Committed to the working database, the journal record not
		// written: the write is lost, as if it had never been done.
		{"journal:committed", 0, "", "layer-active"},      // Prepare of the layer
		{"journal:committed", 1, "layer-active", "layer"}, // Commit
		{"journal:committed", 2, "layer", "view"},         // View
		{"journal:committed", 6, "view", ""},              // Remove of the view: it is back
		{"journal:committed", 7, "container", ""},         // Remove of a container, its subvolume kept
	}
	for i, p := range points {
		t.Run(fmt.Sprintf("%s#%d", p.step, p.skip), func(t *testing.T) {
			root := filepath.Join(fsRoot, strconv.Itoa(i))
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), envCrashRoot+"="+root, envCrashStep+"="+p.step, envCrashSkip+"="+strconv.Itoa(p.skip))
			out, err := cmd.CombinedOutput()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("child did not die at %s: %v\n%s", p.step, err, out)
			}

			ctx := testContext(t)
			s, err := NewSnapshotter(ctx, root)
			if err != nil {
				t.Fatalf("restart after crash: %v", err)
			}
			defer s.Close()
			if st := readState(t, s); !subset(st.known, st.onDisk) {
				t.Fatalf("metadata names a subvolume that does not exist: %+v", st)
			}
			if p.survives != "" {
				if _, err := s.Stat(ctx, p.survives+"-crashed"); err != nil {
					t.Fatalf("%s, whose write returned before the crash: %v", p.survives, err)
				}
			}
			if p.lost != "" {
				if _, err := s.Stat(ctx, p.lost+"-crashed"); !errdefs.IsNotFound(err) {
					t.Fatalf("%s, whose write was cut by the crash, is there: %v", p.lost, err)
				}
			}
			// An id whose creation was rolled back is handed out again; that
			// must work even before Cleanup ran.
			if _, err := s.Prepare(ctx, "before-cleanup", ""); err != nil {
				t.Fatalf("Prepare after crash, before Cleanup: %v", err)
			}
			if err := s.Cleanup(ctx); err != nil {
				t.Fatal(err)
			}
			if st := readState(t, s); !st.consistent() {
				t.Fatalf("not consistent after restart + Cleanup: %+v", st)
			}
			// Whatever committed layer survived holds its content intact,
			// in a subvolume that is read-only by now.
			if _, err := s.Stat(ctx, "layer-crashed"); err == nil {
				dir := snapshotDir(t, s, "layer-crashed")
				got, err := os.ReadFile(filepath.Join(dir, "data"))
				if err != nil || !bytes.Equal(got, layerContent) {
					t.Fatalf("committed layer content damaged: %v", err)
				}
				if ro, err := readOnly(dir); err != nil || !ro {
					t.Fatalf("committed layer %s is not read-only after the restart (%v)", dir, err)
				}
			} else if !errdefs.IsNotFound(err) {
				t.Fatal(err)
			}
			// And the snapshotter keeps working.
			if err := scenario(ctx, s, "after"); err != nil {
				t.Fatalf("operations after recovery: %v", err)
			}
			if st := readState(t, s); !st.consistent() {
				t.Fatalf("not consistent after more operations: %+v", st)
			}
		})
	}
}

func subset(a, b []string) bool {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	for _, x := range a {
		if !in[x] {
			return false
		}
	}
	return true
}

package nsenter

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tupper/tupper/internal/testutil"
	"github.com/tupper/tupper/shim/container/protocol"
	"golang.org/x/sys/unix"
)

// TestForkToSubreaperKeepsLibcThreadID: a helper that the constructor
// forks into a pid namespace goes on to start Go, whose threads the libc
// creates under a lock it owns by thread id, and musl's gettid, raise and
// abort read the same cached id. In the shim's mode (the parent is a child
// subreaper) the child's libc must hold its own id, and the child must come
// to the parent once the intermediate has exited. The program is built
// with musl, as tupper's binaries are: glibc's gettid asks the kernel.
func TestForkToSubreaperKeepsLibcThreadID(t *testing.T) {
	// The child outlives the intermediate, which the test waits for: it
	// runs in a process of its own that is a subreaper, as the shim.
	if prog := os.Getenv("FORKTID_PROGRAM"); prog != "" {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			t.Fatal(err)
		}
		runForkTid(t, prog)
		return
	}
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root (a pid namespace)")
	}
	cc, err := exec.LookPath("musl-gcc")
	if err != nil {
		testutil.Require(t, "needs musl-gcc (make deps)")
	}
	prog := filepath.Join(t.TempDir(), "forktid")
	if out, err := exec.Command(cc, "-static", "-O2", "-o", prog, "testdata/forktid.c").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	testutil.RerunTest(t, "FORKTID_PROGRAM", prog)
}

func runForkTid(t *testing.T, prog string) {
	parent, child, err := protocol.NewPair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(prog, protocol.ForkToSubreaper)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.ExtraFiles = []*os.File{child} // fd 3, TUPPER_SYNC_FD
	err = cmd.Run()                    // the intermediate
	child.Close()
	w.Close()
	if err != nil {
		t.Fatalf("intermediate: %v", err)
	}
	m, _, err := protocol.Expect[*protocol.Forked](parent)
	if err != nil {
		t.Fatalf("the Forked message: %v", err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(m.Pid, &ws, 0, nil); err != nil {
		t.Fatalf("wait for the forked child %d: %v (it did not come to this subreaper)", m.Pid, err)
	}
	out := make([]byte, 256)
	n, _ := r.Read(out)
	var libc, kernel int
	if _, err := fmt.Sscanf(string(out[:n]), "libc %d kernel %d", &libc, &kernel); err != nil {
		t.Fatalf("child's output %q: %v", out[:n], err)
	}
	if kernel != 1 || ws.ExitStatus() != 0 {
		t.Fatalf("the child is thread %d in its pid namespace (want 1), exit %v", kernel, ws)
	}
	if libc != kernel {
		t.Errorf("the child's libc holds thread id %d, the kernel says %d", libc, kernel)
	}
}

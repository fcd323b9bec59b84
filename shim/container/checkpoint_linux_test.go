//go:build !tupper_nocriu

package container

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/testutil"
	"github.com/tupper/tupper/shim/criu"
	"golang.org/x/sys/unix"
)

// counter counts in a shell variable, printing each value.
const counter = `i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done`

func needCriu(t *testing.T) *criu.Client {
	t.Helper()
	needRoot(t)
	c, err := criu.Find("", nil)
	if err != nil {
		testutil.Require(t, err.Error())
	}
	return c
}

// lines are the complete lines of out.
func lines(out string) []string {
	l := strings.Split(out, "\n")
	return l[:len(l)-1]
}

// TestCheckpointRestoreCounter checkpoints a container that counts in
// memory, the dump ending it, and restores it from the image into a new
// container on the same bundle: it goes on from where it was, printing to
// the new container's stdout.
func TestCheckpointRestoreCounter(t *testing.T) {
	cr := needCriu(t)
	bundle := newBundle(t)
	r := started(t, bundle, testSpec("sh", "-c", counter))
	r.out.waitFor(t, "\n5\n")
	images := t.TempDir()
	if err := r.c.Checkpoint(CheckpointOptions{Criu: cr, ImageDir: images}); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.wait(t); st != 128+int(unix.SIGKILL) {
		t.Fatalf("the dumped container exited with %d, want killed", st)
	}
	before := lines(r.out.String())
	last, _ := strconv.Atoi(before[len(before)-1])

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Restore(RestoreOptions{
		Options: Options{ID: "t", Bundle: bundle, Spec: testSpec("sh", "-c", counter), Stdio: Stdio{Stdout: pw, Stderr: pw}},
		Criu:    cr, ImageDir: images,
	})
	pw.Close()
	if err != nil {
		pr.Close()
		t.Fatal(err)
	}
	out := newOutBuffer()
	go io.Copy(out, pr)
	t.Cleanup(func() {
		c.Init().Signal(unix.SIGKILL)
		c.Init().Wait()
		pr.Close()
	})
	out.waitFor(t, strconv.Itoa(last+3)+"\n")
	if got := lines(out.String())[0]; got != strconv.Itoa(last+1) {
		t.Fatalf("restored counter began at %s, want %d (it stopped at %d)", got, last+1, last)
	}
	if err := c.Init().Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Init().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the restored init did not die of SIGKILL")
	}
	if _, err := os.Stat(filepath.Join(images, "inventory.img")); err != nil {
		t.Fatalf("no CRIU image: %v", err)
	}
}

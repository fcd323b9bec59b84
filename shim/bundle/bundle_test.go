package bundle

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestInitAndExit(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := WriteInit(dir, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	i, err := ReadInit(dir)
	if err != nil || i.Pid != cmd.Process.Pid || !i.Alive() {
		t.Fatalf("init %+v %v alive=%v", i, err, i.Alive())
	}
	cmd.Process.Kill()
	// A zombie is not alive.
	for n := 0; n < 100 && i.Alive(); n++ {
		time.Sleep(10 * time.Millisecond)
	}
	if i.Alive() {
		t.Fatal("killed init still alive")
	}
	cmd.Wait()
	// A recycled pid with another start time is not ours.
	if (Init{Pid: os.Getpid(), StartTime: 1}).Alive() {
		t.Fatal("start time ignored")
	}
	at := time.Now().UTC().Truncate(time.Second)
	if err := WriteExit(dir, Exit{Pid: 42, Status: 7, ExitedAt: at}); err != nil {
		t.Fatal(err)
	}
	e, err := ReadExit(dir)
	if err != nil || e.Status != 7 || e.Pid != 42 || !e.ExitedAt.Equal(at) {
		t.Fatalf("exit %+v %v", e, err)
	}
}

package cgroups

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestKillLogReadsRecords(t *testing.T) {
	l := &KillLog{init: []byte("1234")}
	for _, c := range []struct {
		record string
		want   bool
	}{
		{"3,39215,10982155195,-;Memory cgroup out of memory: Killed process 1234 (dd) total-vm:105376kB\n", true},
		{"3,1,1,-;Out of memory: Killed process 1234 (dd) total-vm:1kB\n", true},
		{"3,1,1,-;Out of memory (oom_kill_allocating_task): Killed process 1234 (dd) total-vm:1kB\n", true},
		{"3,1,1,-;Memory cgroup out of memory: Killed process 12345 (dd) total-vm:1kB\n", false},
		{"3,1,1,-;Memory cgroup out of memory: Killed process 123 (dd) total-vm:1kB\n", false},
		// What a process writes to /dev/kmsg is never facility 0.
		{"14,1,1,-;Memory cgroup out of memory: Killed process 1234 (dd) total-vm:1kB\n", false},
		// The prefix must start the text, not come in a name inside it.
		{"4,1,1,-;x: Memory cgroup out of memory: Killed process 1234 (dd)\n", false},
		{"6,1,1,-;oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg=/a,task=dd,pid=1234,uid=0\n", false},
		{"garbage", false},
		{"x,1,1,-;Memory cgroup out of memory: Killed process 1234 (dd)\n", false},
	} {
		if got := l.killsInit([]byte(c.record)); got != c.want {
			t.Errorf("%q: %v, want %v", c.record, got, c.want)
		}
	}
}

// TestKillLogSeesOOMKill has the kernel OOM-kill a process and finds the
// kill in the log after the process' cgroup is gone; a log for another
// pid, and a record a process forges, count nothing.
func TestKillLogSeesOOMKill(t *testing.T) {
	path := testPath(t)
	m, err := New(context.Background(), path, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(32 << 20))}}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Delete()
	cmd, out, exited, release := startHeld(t, "exec dd if=/dev/zero of=/dev/null bs=100M count=1")
	victim, err := OpenKillLog(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	other, err := OpenKillLog(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	release()
	<-exited
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("dd was not OOM-killed: %v\n%s", cmd.ProcessState, out)
	}
	if err := m.Delete(); err != nil {
		t.Fatal(err)
	}
	forgeKill(t, os.Getpid())
	if n, err := victim.Kills(); err != nil || n != 1 {
		t.Errorf("the victim's log counts %d kills (%v), want 1", n, err)
	}
	if n, err := other.Kills(); err != nil || n != 0 {
		t.Errorf("another pid's log counts %d kills (%v), want 0 (the only record naming it is forged)", n, err)
	}
}

// forgeKill writes to the kernel log what the kernel writes for an OOM
// kill of pid, at the kernel's facility, as a hostile process would.
func forgeKill(t *testing.T, pid int) {
	t.Helper()
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "<3>Memory cgroup out of memory: Killed process %d (tupper-forged) written by a tupper test\n", pid); err != nil {
		t.Fatal(err)
	}
}

package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/tupper/tupper/internal/harness"
)

// TestReliability breaks things on purpose (issue 9): containerd restarts
// under 20 running containers, and a shim is SIGKILLed.
func TestReliability(t *testing.T) {
	e := newEnv(t)
	runSubtests(t, e, []subtest{
		{"containerd-restart-20", testContainerdRestart20},
		{"shared-pid-namespace-init-exit", testSharedPidNamespaceInitExit},
		{"shim-sigkill-releases-everything", testShimSigkillReleasesEverything},
	})
}

// detached is ctr run -d with the tupper runtime.
func detached(args ...string) []string {
	return append([]string{"run", "-d", "--runtime", harness.TupperRuntimeType}, args...)
}

// startMany starts containers <prefix>0..<prefix><n-1>, running sleep,
// all at once.
func (e *env) startMany(t *testing.T, prefix string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%d", prefix, i)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = e.ctr(detached(image, ids[i], "sleep", "1000")...)
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return ids
}

// execSessions starts a long exec in each container, through ctr
// processes that the caller waits for; it returns once they all run.
func (e *env) execSessions(t *testing.T, ids []string) []*exec.Cmd {
	t.Helper()
	var cmds []*exec.Cmd
	t.Cleanup(func() {
		for _, cmd := range cmds {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	for _, id := range ids {
		cmd := e.CtrCommand(context.Background(), "task", "exec", "--exec-id", "long-"+id, id, "sleep", "1000")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, id := range ids {
		waitFor(t, func() bool { return len(e.psPids(id)) >= 2 }, "the exec session in "+id+" to run") // init, exec
	}
	return cmds
}

// testContainerdRestart20: containerd restarts under 20 running containers
// (3 with exec sessions open), and one that dies while it is away.
func testContainerdRestart20(t *testing.T, e *env) {
	ids := e.startMany(t, "c", 20)
	e.mustCtr(detached(image, "exits", "sleep", "1000")...)
	// Exec sessions open across the restart. Their ctr clients lose
	// containerd and end them, under runc exactly as under tupper; what
	// must hold is that the containers stay running and manageable.
	execs := e.execSessions(t, ids[:3])
	exitsPid := e.taskPid("exits")

	e.StopContainerd(t)
	syscall.Kill(exitsPid, syscall.SIGKILL) // the init dies while containerd is away
	e.StartContainerd(t)

	for _, id := range ids {
		if st := e.taskStatus(id); st != "RUNNING" {
			t.Fatalf("%s is %s after the restart", id, st)
		}
	}
	e.waitStopped("exits")
	if out := e.mustCtr("task", "delete", "exits"); !strings.Contains(out, "exit code 137") {
		t.Errorf("the container that died while containerd was down: %q, want its real status 137", out)
	}
	// Manageable: exec, the old exec sessions, kill, delete.
	for _, id := range ids {
		if out := e.mustCtr("task", "exec", "--exec-id", "after", id, "echo", "ok"); out != "ok\n" {
			t.Fatalf("exec in %s after the restart: %q", id, out)
		}
	}
	e.kill(ids...)
	for _, cmd := range execs {
		cmd.Wait() // ended by the kill
	}
	e.mustCtr("containers", "rm", "exits")
	if a := e.allocations(); len(a) != 0 {
		t.Errorf("addresses still allocated after deleting everything: %v", a)
	}
}

// A container in another's pid namespace (as in a pod sharing one):
// when its init dies the kernel leaves init's children running, so
// the shim must end them, or they keep the container's output open and
// Delete waits (CRI's StopPodSandbox hung on exactly this).
func testSharedPidNamespaceInitExit(t *testing.T, e *env) {
	e.mustCtr(detached(image, "pidowner", "sleep", "1000")...)
	e.mustCtr(detached("--with-ns", fmt.Sprintf("pid:/proc/%d/ns/pid", e.taskPid("pidowner")), image, "member",
		"sh", "-c", "sleep 1001 & exec sleep 1002")...)
	var child int
	waitFor(t, func() bool {
		for _, p := range e.psPids("member") {
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); string(cmdline) == "sleep\x001001\x00" {
				child = p
			}
		}
		return child > 0
	}, "the member's background child")
	e.mustCtr("task", "kill", "-s", "KILL", "member")
	e.waitStopped("member")
	// Dead is gone or a zombie: the namespace's PID 1 here is a sleep
	// that never reaps (a pod's pause would).
	waitFor(t, func() bool {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		return err != nil || strings.Contains(string(st), ") Z ")
	}, "the member's child to end with its init")
	e.mustCtr("task", "delete", "member")
	e.mustCtr("containers", "rm", "member")
	e.kill("pidowner")
}

func testShimSigkillReleasesEverything(t *testing.T, e *env) {
	before := e.ShimPids()
	e.mustCtr(detached(image, "k1", "sleep", "1000")...)
	pid := e.taskPid("k1")
	shim := e.newShim(before)
	if len(e.allocations()) != 1 {
		t.Fatalf("shim %d, %d allocations", shim, len(e.allocations()))
	}
	if len(e.veths()) == 0 {
		t.Fatal("no veth for the container")
	}
	socket := e.shimSocket("k1")
	syscall.Kill(shim, syscall.SIGKILL)
	waitFor(t, func() bool { return syscall.Kill(pid, 0) != nil }, "the container's init to be killed by shim delete")
	waitFor(t, func() bool { return len(e.stateMounts()) == 0 }, "the rootfs to be unmounted")
	waitFor(t, func() bool { return len(e.allocations()) == 0 }, "the address to be released")
	waitFor(t, func() bool { return len(e.veths()) == 0 }, "the veth to be deleted")
	waitFor(t, func() bool { _, err := os.Lstat(socket); return os.IsNotExist(err) }, "the shim's socket to be removed")
	e.ctr("containers", "rm", "k1")
}

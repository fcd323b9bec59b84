package shim

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestReliability breaks things on purpose (issue 9): containerd restarts
// under 20 running containers, and a shim is SIGKILLed.
func TestReliability(t *testing.T) {
	e := newEnv(t)
	tupper := func(args ...string) []string {
		return append([]string{"run", "-d", "--runtime", "io.containerd.tupper.v2"}, args...)
	}
	allocations := func() int {
		entries, _ := os.ReadDir(filepath.Join(e.dir, "net", e.bridge, "ipv4"))
		n := 0
		for _, en := range entries {
			if strings.Count(en.Name(), ".") == 3 {
				n++
			}
		}
		return n
	}

	t.Run("containerd-restart-20", func(t *testing.T) {
		e.t = t
		const n = 20
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				e.mustCtr(tupper(image, fmt.Sprintf("c%d", i), "sleep", "1000")...)
			}(i)
		}
		wg.Wait()
		// One exits, with status 6, while containerd is down.
		e.mustCtr(tupper(image, "exits", "sh", "-c", "read x; exit 6")...)
		// Exec sessions open across the restart. Their ctr clients lose
		// containerd and end them, under runc exactly as under tupper; what
		// must hold is that the containers stay running and manageable.
		execs := make([]*exec.Cmd, 3)
		for i := range execs {
			cmd := exec.Command("ctr", e.ctrArgs([]string{"task", "exec", "--exec-id", fmt.Sprintf("long%d", i), fmt.Sprintf("c%d", i), "sleep", "1000"})...)
			cmd.Env = append(os.Environ(), "PATH="+e.path)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			execs[i] = cmd
		}
		waitFor(t, func() bool {
			out, _ := e.ctr("task", "ps", "c2")
			return strings.Count(out, "\n") >= 3 // header, init, exec
		}, "the exec sessions to run")
		exitsPid := e.taskPid("exits")

		e.stopContainerd()
		syscall.Kill(exitsPid, syscall.SIGKILL) // the init dies while containerd is away
		e.startContainerd(lookBin("containerd"))

		out := e.mustCtr("task", "ls")
		for i := 0; i < n; i++ {
			if !strings.Contains(out, fmt.Sprintf("c%d ", i)) || !strings.Contains(out, "RUNNING") {
				t.Fatalf("c%d not listed as running after the restart:\n%s", i, out)
			}
		}
		e.waitStopped("exits")
		if out := e.mustCtr("task", "delete", "exits"); !strings.Contains(out, "exit code 137") {
			t.Errorf("the container that died while containerd was down: %q, want its real status 137", out)
		}
		// Manageable: exec, the old exec sessions, kill, delete.
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("c%d", i)
			if out := e.mustCtr("task", "exec", "--exec-id", "after", id, "echo", "ok"); out != "ok\n" {
				t.Fatalf("exec in %s after the restart: %q", id, out)
			}
		}
		var ids []string
		for i := 0; i < n; i++ {
			ids = append(ids, fmt.Sprintf("c%d", i))
			e.mustCtr("task", "kill", "-s", "KILL", ids[i])
		}
		for _, id := range ids {
			e.waitStopped(id)
			e.mustCtr("task", "delete", id)
		}
		for _, cmd := range execs {
			cmd.Wait() // ended by the kill
		}
		e.mustCtr(append([]string{"containers", "rm", "exits"}, ids...)...)
		if a := allocations(); a != 0 {
			t.Errorf("%d addresses still allocated after deleting everything", a)
		}
	})

	// A container in another's pid namespace (as in a pod sharing one):
	// when its init dies the kernel leaves init's children running, so
	// the shim must end them, or they keep the container's output open and
	// Delete waits (CRI's StopPodSandbox hung on exactly this).
	t.Run("shared-pid-namespace-init-exit", func(t *testing.T) {
		e.t = t
		e.mustCtr(tupper(image, "pidowner", "sleep", "1000")...)
		e.mustCtr(tupper("--with-ns", fmt.Sprintf("pid:/proc/%d/ns/pid", e.taskPid("pidowner")), image, "member",
			"sh", "-c", "sleep 1001 & exec sleep 1002")...)
		var child int
		waitFor(t, func() bool {
			out, _ := exec.Command("pgrep", "-f", "^sleep 1001$").Output()
			fmt.Sscan(string(out), &child)
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
		e.mustCtr("task", "kill", "-s", "KILL", "pidowner")
		e.waitStopped("pidowner")
		e.mustCtr("task", "delete", "pidowner")
		e.mustCtr("containers", "rm", "member", "pidowner")
	})

	t.Run("shim-sigkill-releases-everything", func(t *testing.T) {
		e.t = t
		before := e.shimPids()
		e.mustCtr(tupper(image, "k1", "sleep", "1000")...)
		pid := e.taskPid("k1")
		shim := e.newShim(before)
		if allocations() != 1 {
			t.Fatalf("shim %d, %d allocations", shim, allocations())
		}
		veths, _ := exec.Command("ip", "-o", "link", "show", "master", e.bridge).Output()
		if len(strings.TrimSpace(string(veths))) == 0 {
			t.Fatal("no veth for the container")
		}
		syscall.Kill(shim, syscall.SIGKILL)
		waitFor(t, func() bool { return syscall.Kill(pid, 0) != nil }, "the container's init to be killed by shim delete")
		waitFor(t, func() bool { return len(mountsUnder(e.dir+"/state")) == 0 }, "the rootfs to be unmounted")
		waitFor(t, func() bool { return allocations() == 0 }, "the address to be released")
		waitFor(t, func() bool {
			out, _ := exec.Command("ip", "-o", "link", "show", "master", e.bridge).Output()
			return len(strings.TrimSpace(string(out))) == 0
		}, "the veth to be deleted")
		e.ctr("containers", "rm", "k1")
	})
}

package shim

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestShim runs the acceptance scenarios of the shim against one private
// containerd.
func TestShim(t *testing.T) {
	e := newEnv(t)
	runSubtests(t, e, []subtest{
		{"hello", testHello},
		{"exit-status", testExitStatus},
		{"inside", testInside},
		{"detached-kill-ps", testDetachedKillPs},
		{"exec", testExec},
		{"run-tty", testRunTty},
		{"join-by-path", testJoinByPath},
		{"group", testGroup},
		{"invalid", testInvalid},
		{"differential-runc", testDifferentialRunc},
		{"execve-failure-like-runc", testExecveFailureLikeRunc},
		{"hardening-like-runc", testHardeningLikeRunc},
		{"hardening-refusals", testHardeningRefusals},
		{"containerd-restart", testContainerdRestart},
		{"dead-shim-cleanup", testDeadShimCleanup},
	})
}

func testHello(t *testing.T, e *env) {
	if out, code := e.run("hello", nil, "echo", "hello"); code != 0 || out != "hello\n" {
		t.Fatalf("code %d output %q", code, out)
	}
}

func testExitStatus(t *testing.T, e *env) {
	if out, code := e.run("exit7", nil, "sh", "-c", "exit 7"); code != 7 {
		t.Fatalf("code %d output %q", code, out)
	}
}

func testInside(t *testing.T, e *env) {
	out, code := e.run("inside", []string{"--hostname", "box1"}, "sh", "-c",
		"hostname; wc -c < /proc/keys; (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo rw || echo ro; ps -o pid,comm; true")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 6 || lines[0] != "box1" || lines[1] != "0" || lines[2] != "ro" {
		t.Fatalf("code %d output %q", code, out)
	}
	// Only the container's own processes: sh as PID 1, and ps.
	if f := strings.Fields(lines[4]); f[0] != "1" || f[1] != "sh" {
		t.Errorf("pid 1 is %q", lines[4])
	}
	if f := strings.Fields(lines[5]); f[1] != "ps" {
		t.Errorf("unexpected process %q", lines[5])
	}
}

func testDetachedKillPs(t *testing.T, e *env) {
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", image, "d1", "sh", "-c",
		`trap "exit 3" TERM; while true; do sleep 1; done`)
	pid := e.taskPid("d1")
	ps := e.mustCtr("task", "ps", "d1")
	if !strings.Contains(ps, fmt.Sprint(pid)) || len(strings.Split(strings.TrimSpace(ps), "\n")) < 2 {
		t.Fatalf("task ps:\n%s", ps)
	}
	e.mustCtr("task", "kill", "-s", "TERM", "d1")
	e.waitStopped("d1")
	if out := e.mustCtr("task", "delete", "d1"); !strings.Contains(out, "exit code 3") {
		t.Errorf("delete after TERM: %q", out)
	}
	e.mustCtr("containers", "rm", "d1")

	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", image, "d2", "sleep", "1000")
	e.mustCtr("task", "kill", "-s", "KILL", "d2")
	e.waitStopped("d2")
	if out := e.mustCtr("task", "delete", "d2"); !strings.Contains(out, "exit code 137") {
		t.Errorf("delete after KILL: %q", out)
	}
	e.mustCtr("containers", "rm", "d2")
}

func testExec(t *testing.T, e *env) {
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", "--hostname", "ex", image, "x1", "sleep", "1000")
	e.removeAtEnd(t, "x1")
	// x1's shim only: an earlier subtest's shim may still be exiting,
	// and its fds would go away during the count.
	shims := e.ShimsStartedFor("x1")
	if len(shims) != 1 {
		t.Fatalf("%d shims started for x1", len(shims))
	}
	fds := func() int {
		n := 0
		for _, p := range shims {
			ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
			n += len(ents)
		}
		return n
	}
	before := fds()
	out, err := e.ctr("task", "exec", "--exec-id", "e1", "x1", "sh", "-c", "hostname; cat /proc/1/cmdline; echo; exit 5")
	if code := exitCode(t, err); code != 5 || strings.ReplaceAll(out, "\x00", "") != "ex\nsleep1000\n" {
		t.Fatalf("exec: code %d output %q", code, strings.ReplaceAll(out, "\x00", ""))
	}
	out, err = e.underPty("stty rows 30 cols 90; "+e.ctrLine("task", "exec", "-t", "--exec-id", "e2", "x1", "sh", "-c", "'tty; "+waitSize("30 90")+"; exit 4'"), "", "")
	if code := exitCode(t, err); code != 4 || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "30 90") {
		t.Fatalf("exec -t: code %d output %q", code, out)
	}
	for i := 0; i < 3; i++ {
		e.mustCtr("task", "exec", "--exec-id", fmt.Sprint("n", i), "x1", "true")
		if _, err := e.underPty(e.ctrLine("task", "exec", "-t", "--exec-id", fmt.Sprint("t", i), "x1", "true"), "", ""); err != nil {
			t.Fatalf("exec -t true: %v", err)
		}
	}
	// Exec'd processes leave no fd behind in the shim (pty masters,
	// FIFOs, pidfds).
	if after := fds(); after != before {
		t.Errorf("shim fds %d before the execs, %d after", before, after)
	}
}

func testRunTty(t *testing.T, e *env) {
	line := "stty rows 40 cols 100; " + e.ctrLine("run", "-t", "--rm", "--runtime", "io.containerd.tupper.v2", image, "t1", "sh")
	// Interactive: the commands arrive once the task runs.
	out, err := e.underPty(line, waitSize("40 100")+"; tty\nexit 3\n", "t1")
	if code := exitCode(t, err); code != 3 || !strings.Contains(out, "40 100") || !strings.Contains(out, "/dev/pts/0") {
		t.Fatalf("run -t: code %d output %q", code, out)
	}
}

func testJoinByPath(t *testing.T, e *env) {
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", image, "j1", "sleep", "1000")
	e.removeAtEnd(t, "j1")
	pid := e.taskPid("j1")
	var extra, want []string
	for _, n := range []struct{ oci, proc string }{{"network", "net"}, {"ipc", "ipc"}, {"uts", "uts"}, {"pid", "pid"}} {
		extra = append(extra, "--with-ns", fmt.Sprintf("%s:/proc/%d/ns/%s", n.oci, pid, n.proc))
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, n.proc))
		want = append(want, l)
	}
	out, code := e.run("j2", extra, "sh", "-c", "for n in net ipc uts pid; do readlink /proc/self/ns/$n; done; cat /proc/1/cmdline")
	if code != 0 || out != strings.Join(want, "\n")+"\nsleep\x001000\x00" {
		t.Fatalf("code %d output %q want %q", code, out, want)
	}
}

func testGroup(t *testing.T, e *env) {
	// The shims started for these containers; an earlier subtest's shim
	// may still be exiting.
	shims := func(ids ...string) int { return len(e.ShimsStartedFor(ids...)) }
	for _, id := range []string{"g1", "g2"} {
		e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", "--annotation", "io.containerd.tupper.v2.group=pod1", image, id, "sleep", "1000")
	}
	if n := shims("g1", "g2"); n != 1 {
		t.Errorf("%d shims for a group of two", n)
	}
	// CRI's pod annotation groups the same way.
	for _, id := range []string{"g3", "g4"} {
		e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", "--annotation", "io.kubernetes.cri.sandbox-id=sb1", image, id, "sleep", "1000")
	}
	if n := shims("g1", "g2", "g3", "g4"); n != 2 {
		t.Errorf("%d shims for two groups of two", n)
	}
	for _, id := range []string{"g1", "g2", "g3", "g4"} {
		e.mustCtr("task", "kill", "-s", "KILL", id)
		e.waitStopped(id)
		e.mustCtr("task", "delete", id)
		e.mustCtr("containers", "rm", id)
	}
	waitFor(t, func() bool { return shims("g1", "g2", "g3", "g4") == 0 }, "the groups' shims to exit")
}

func testInvalid(t *testing.T, e *env) {
	out, code := e.run("bad1", nil, "no-such-cmd")
	if code == 0 || !strings.Contains(out, `executable "no-such-cmd" not found`) {
		t.Fatalf("code %d output %q", code, out)
	}
	out, code = e.run("bad2", []string{"--mount", "type=tmpfs,src=tmpfs,dst=/escape/x"}, "true")
	if code == 0 || !strings.Contains(out, `mount /escape/x: path "/escape/x" escapes the rootfs through a symlink`) {
		t.Fatalf("code %d output %q", code, out)
	}
	waitFor(t, func() bool { return len(e.ShimPids()) == 0 }, "no shim left")
	if ms := e.stateMounts(); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}
	if out := e.mustCtr("containers", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("containers left: %q", out)
	}
}

func testDifferentialRunc(t *testing.T, e *env) {
	haveRunc(t)
	cmd := `grep -E "^(Cap|NoNewPrivs)" /proc/self/status; ulimit -n; ulimit -Hn; id; ls -la /dev | awk '{print $1, $3, $4, $NF}'; awk '{print $5, $4, $6}' /proc/self/mountinfo; umask; cat /proc/1/cmdline`
	outs := map[string]string{}
	for _, rt := range []string{"tupper", "runc"} {
		out, err := e.ctr("run", "--rm", "--runtime", "io.containerd."+rt+".v2", "--user", "1000:1000", image, "diff-"+rt, "sh", "-c", cmd)
		if err != nil {
			t.Fatalf("%s: %v %s", rt, err, out)
		}
		outs[rt] = out
	}
	if outs["tupper"] != outs["runc"] {
		t.Fatalf("tupper and runc differ\ntupper:\n%s\nrunc:\n%s", outs["tupper"], outs["runc"])
	}
}

// A program that fails in execve after the executable check (a script
// whose interpreter is missing) fails as under runc: the task starts, and
// the process prints runc's line and exits with 255, for a run and for an
// exec.
func testExecveFailureLikeRunc(t *testing.T, e *env) {
	haveRunc(t)
	script := filepath.Join(t.TempDir(), "s.sh")
	if err := os.WriteFile(script, []byte("#!/nonexistent/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	mount := "type=bind,src=" + script + ",dst=/s.sh,options=rbind:ro"
	results := map[string]string{}
	for _, rt := range []string{"tupper", "runc"} {
		runtime := "io.containerd." + rt + ".v2"
		out, err := e.ctr("run", "--rm", "--runtime", runtime, "--mount", mount, image, "execve-"+rt, "/s.sh")
		results[rt] = fmt.Sprintf("run: %d %q", exitCode(t, err), out)
		e.mustCtr("run", "-d", "--runtime", runtime, "--mount", mount, image, "execve-x-"+rt, "sleep", "1000")
		e.removeAtEnd(t, "execve-x-"+rt)
		out, err = e.ctr("task", "exec", "--exec-id", "e1", "execve-x-"+rt, "/s.sh")
		results[rt] += fmt.Sprintf("; exec: %d %q", exitCode(t, err), out)
	}
	want := `run: 255 "exec /s.sh: no such file or directory\n"; exec: 255 "exec /s.sh: no such file or directory\n"`
	if results["tupper"] != results["runc"] || results["tupper"] != want {
		t.Fatalf("tupper: %s\nrunc:   %s\nwant:   %s", results["tupper"], results["runc"], want)
	}
}

// Issue 6: the same hardening as runc for the same spec, with and
// without containerd's default seccomp profile, and privileged.
func testHardeningLikeRunc(t *testing.T, e *env) {
	haveRunc(t)
	probe := `grep -E "^(Cap|NoNewPrivs|Seccomp):" /proc/self/status
try() { if "$@" >/dev/null 2>&1; then echo "$1: allowed"; else echo "$1: refused"; fi; }
try unshare -m true
mkdir -p /mnt/t; try mount -t tmpfs none /mnt/t
try sh -c 'echo 1 > /proc/sys/kernel/domainname'
try sh -c 'echo h > /proc/sysrq-trigger'
try sh -c 'head -c1 /dev/mem'
try insmod /nonexistent.ko
ls /dev | tr '\n' ' '`
	// keyctl and ptrace need a probe binary (busybox has neither). The
	// ptrace target is a host process that root on the host could trace.
	probeBin := filepath.Join(e.Dir, "probe")
	if out, err := exec.Command("gcc", "-static", "-O2", "-o", probeBin, "testdata/probe.c").CombinedOutput(); err != nil {
		t.Fatalf("building the syscall probe (hack/install-deps.sh installs gcc): %v %s", err, out)
	}
	hostProc := exec.Command("sleep", "300")
	if err := hostProc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { hostProc.Process.Kill(); hostProc.Wait() }()
	probe += fmt.Sprintf("\necho\n/probe keyctl\n/probe ptrace %d\n/probe fchmodat2", hostProc.Process.Pid)
	probeMount := "type=bind,src=" + probeBin + ",dst=/probe,options=rbind:ro"
	// reboot(2) is refused without CAP_SYS_BOOT; with it (privileged) it
	// would end the container's pid namespace, so only unprivileged
	// runs try it.
	rebootProbe := "\ntry reboot -f"
	for _, mode := range [][]string{nil, {"--seccomp"}, {"--privileged"}} {
		outs := map[string]string{}
		for _, rt := range []string{"tupper", "runc"} {
			args := append([]string{"run", "--rm", "--runtime", "io.containerd." + rt + ".v2", "--mount", probeMount}, mode...)
			script := probe
			if len(mode) == 0 || mode[0] != "--privileged" {
				script += rebootProbe
			}
			args = append(args, image, fmt.Sprintf("harden-%s-%d", rt, len(mode)), "sh", "-c", script)
			out, err := e.ctr(args...)
			if err != nil {
				t.Fatalf("%s %v: %v %s", rt, mode, err, out)
			}
			outs[rt] = out
		}
		if outs["tupper"] != outs["runc"] {
			t.Errorf("%v: tupper and runc differ\ntupper:\n%s\nrunc:\n%s", mode, outs["tupper"], outs["runc"])
		}
		if !strings.Contains(outs["tupper"], "ptrace: refused") {
			t.Errorf("%v: a host process is traceable from the container:\n%s", mode, outs["tupper"])
		}
		switch {
		case len(mode) == 0 && !strings.Contains(outs["tupper"], "sh: refused"):
			t.Errorf("default spec: /proc/sys or sysrq writable:\n%s", outs["tupper"])
		case len(mode) == 1 && mode[0] == "--seccomp" && (!strings.Contains(outs["tupper"], "Seccomp:\t2") || !strings.Contains(outs["tupper"], "unshare: refused") || !strings.Contains(outs["tupper"], "reboot: refused") || !strings.Contains(outs["tupper"], "keyctl: refused")):
			t.Errorf("--seccomp: filter not in force:\n%s", outs["tupper"])
		case len(mode) == 1 && mode[0] == "--privileged" && !strings.Contains(outs["tupper"], "mount: allowed"):
			t.Errorf("--privileged cannot mount:\n%s", outs["tupper"])
		}
	}
}

func testHardeningRefusals(t *testing.T, e *env) {
	out, err := e.ctr("run", "--rm", "--runtime", "io.containerd.tupper.v2", "--apparmor-profile", "tupper-test", image, "aa1", "true")
	// A host with AppArmor (Debian's kernels) refuses the profile nobody
	// loaded, as runc does; lsm-optional only lets a host without
	// AppArmor run without it.
	enabled, _ := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	apparmor := strings.HasPrefix(string(enabled), "Y")
	if err == nil || !strings.Contains(out, "AppArmor") || (apparmor && !strings.Contains(out, "not loaded")) || (!apparmor && !strings.Contains(out, "lsm-optional")) {
		t.Errorf("AppArmor profile tupper-test (host AppArmor %v): %v %s", apparmor, err, out)
	}
	out, err = e.ctr("run", "--rm", "--runtime", "io.containerd.tupper.v2", "--annotation", "io.containerd.tupper.v2.lsm-optional=true",
		"--apparmor-profile", "tupper-test", image, "aa2", "echo", "ran")
	if ran := err == nil && strings.Contains(out, "ran"); ran == apparmor || (apparmor && !strings.Contains(out, "not loaded")) {
		t.Errorf("lsm-optional (host AppArmor %v): %v %s", apparmor, err, out)
	}
	// ctr run --rm deletes a task that failed to start before it returns:
	// nothing of aa1 or aa2 stays mounted.
	if ms := e.stateMounts(); len(ms) != 0 {
		t.Errorf("mounts left after refused starts: %v", ms)
	}
	// A spec with a non-namespaced sysctl, written as ctr's own spec plus one key.
	specPath := e.Dir + "/sysctl-spec.json"
	e.mustCtr("run", "--dump-config", specPath, image, "dump1", "true")
	b, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	spec["linux"].(map[string]any)["sysctl"] = map[string]string{"kernel.panic": "1"}
	if b, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(specPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = e.ctr("run", "--rm", "--runtime", "io.containerd.tupper.v2", "--config", specPath, "sysctl1")
	if err == nil || !strings.Contains(out, "kernel.panic") || !strings.Contains(out, "not namespaced") {
		t.Errorf("non-namespaced sysctl: %v %s", err, out)
	}
}

func testContainerdRestart(t *testing.T, e *env) {
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", image, "r1", "sleep", "1000")
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", image, "r2", "sh", "-c", `trap "exit 6" USR1; while :; do sleep 0.1; done`)
	r2 := e.taskPid("r2")
	e.StopContainerd(t)
	// r2 exits while containerd is away.
	if err := syscall.Kill(r2, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return syscall.Kill(r2, 0) != nil }, "r2 to exit")
	e.StartContainerd(t)
	e.waitStopped("r2")
	if out := e.mustCtr("task", "delete", "r2"); !strings.Contains(out, "exit code 6") {
		t.Errorf("r2 exit status lost: %q", out)
	}
	if out := e.mustCtr("task", "exec", "--exec-id", "e1", "r1", "echo", "again"); out != "again\n" {
		t.Errorf("exec after restart: %q", out)
	}
	e.mustCtr("task", "kill", "-s", "KILL", "r1")
	e.waitStopped("r1")
	e.mustCtr("task", "delete", "r1")
	e.mustCtr("containers", "rm", "r1", "r2")
}

func testDeadShimCleanup(t *testing.T, e *env) {
	before := e.ShimPids()
	e.mustCtr("run", "-d", "--runtime", "io.containerd.tupper.v2", image, "k1", "sleep", "1000")
	pid := e.taskPid("k1")
	shim := e.newShim(before)
	socket := e.shimSocket("k1")
	if _, err := os.Lstat(socket); err != nil {
		t.Fatalf("the shim's socket: %v", err)
	}
	syscall.Kill(shim, syscall.SIGKILL)
	waitFor(t, func() bool { return syscall.Kill(pid, 0) != nil }, "the container's init to be killed by shim delete")
	if !eventually(func() bool { return len(e.stateMounts()) == 0 }) {
		t.Fatalf("the rootfs is still mounted after shim delete: %v", e.stateMounts())
	}
	// The killed shim could not remove its socket; shim delete does.
	if !eventually(func() bool { _, err := os.Lstat(socket); return os.IsNotExist(err) }) {
		t.Errorf("the killed shim's socket %s is left after shim delete", socket)
	}
	e.ctr("containers", "rm", "k1")
}

// waitSize is a shell loop that waits (up to 5 s) until the terminal has
// the size ctr gives it, then prints the size.
func waitSize(size string) string {
	return `i=0; while [ "$(stty size)" != "` + size + `" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; stty size`
}

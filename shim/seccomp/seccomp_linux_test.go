package seccomp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	cseccomp "github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/internal/testutil"
	"github.com/tupper/tupper/shim/security"
)

// childConfig is what a child does before it execs busybox sh -c Script:
// set no_new_privs, then load Seccomp's program, as a helper does with
// no_new_privs (it loads before dropping capabilities without).
type childConfig struct {
	NNP     bool
	Seccomp *specs.LinuxSeccomp
	Script  string
	// Libseccomp loads the profile with libseccomp's own seccomp_load,
	// not the exported program.
	Libseccomp bool
}

const envChild = "TUPPER_SECCOMP_CHILD"

func TestMain(m *testing.M) {
	testutil.ChildMain(envChild, child)
	os.Exit(m.Run())
}

func child(raw []byte) error {
	runtime.LockOSThread()
	var c childConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	if c.NNP {
		if err := security.SetNoNewPrivileges(); err != nil {
			return err
		}
	}
	if c.Seccomp != nil && c.Libseccomp {
		f, _, err := buildFilter(c.Seccomp)
		if err != nil {
			return err
		}
		if err := f.Load(); err != nil {
			return err
		}
	} else if c.Seccomp != nil {
		prog, err := Compile(c.Seccomp)
		if err != nil {
			return err
		}
		if err := prog.Load(nil); err != nil {
			return err
		}
	}
	return syscall.Exec("/bin/busybox", []string{"sh", "-c", c.Script}, os.Environ())
}

func runChild(t *testing.T, c childConfig) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root to load seccomp filters")
	}
	return testutil.RunChild(t, envChild, c)
}

// containerd's default profile (what `ctr run --seccomp` uses) blocks these
// even for a process that still holds every capability (the child is root
// and keeps all of them).
func TestDefaultProfileBlocks(t *testing.T) {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: testutil.DefaultCaps}}}
	profile := cseccomp.DefaultProfile(spec)
	script := `grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status
unshare -m true 2>&1 || echo unshare-blocked
mkdir -p /tmp/tupper-sec-mnt; mount -t tmpfs none /tmp/tupper-sec-mnt 2>&1 && { umount /tmp/tupper-sec-mnt; echo mount-allowed; } || echo mount-blocked
rmdir /tmp/tupper-sec-mnt`
	out := runChild(t, childConfig{NNP: true, Seccomp: profile, Script: script})
	for _, want := range []string{"Seccomp:\t2", "NoNewPrivs:\t1", "unshare-blocked", "mount-blocked"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "mount-allowed") {
		t.Errorf("mount allowed under the default profile:\n%s", out)
	}
	// And the same process without the filter can do both: the filter, not
	// a missing capability, blocked them.
	out = runChild(t, childConfig{NNP: true, Script: "unshare -m true && echo unshare-ok"})
	if !strings.Contains(out, "unshare-ok") {
		t.Errorf("unshare fails even without seccomp:\n%s", out)
	}
}

func TestProfileActionsAndConditions(t *testing.T) {
	eacces := uint(unix.EACCES)
	profile := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls: []specs.LinuxSyscall{
			// errnoRet: mkdir fails with EACCES instead of EPERM.
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &eacces},
			// An argument condition: only SIGUSR1 (10) is refused to kill.
			{Names: []string{"kill"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 1, Op: specs.OpEqualTo, Value: 10}}},
			{Names: []string{"getcwd"}, Action: specs.ActLog},
			{Names: []string{"no_such_syscall_anywhere"}, Action: specs.ActErrno},
		},
	}
	out := runChild(t, childConfig{NNP: true, Seccomp: profile, Script: `mkdir /tmp/tupper-sec-x 2>&1
kill -USR1 $$ 2>&1 || echo usr1-blocked
trap 'echo usr2-delivered' USR2; kill -USR2 $$; pwd >/dev/null && echo logged-call-allowed`})
	for _, want := range []string{"Permission denied", "usr1-blocked", "usr2-delivered", "logged-call-allowed"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	os.Remove("/tmp/tupper-sec-x")
}

func TestBadProfiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    *specs.LinuxSeccomp
		msg  string
	}{
		{"bad default action", &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_MAYBE"}, "defaultAction"},
		{"bad rule action", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: "NOPE"}}}, "syscalls[0]"},
		{"bad arch", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Architectures: []specs.Arch{"SCMP_ARCH_PDP11"}}, "PDP11"},
		{"bad operator", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Op: "SCMP_CMP_ROUGHLY"}}}}}, "ROUGHLY"},
		{"notify without listener", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActNotify}}}, "listenerPath"},
		{"notify by default", &specs.LinuxSeccomp{DefaultAction: specs.ActNotify, ListenerPath: "/run/agent.sock"}, "cannot be the default action"},
		{"notify the runtime's sendmsg", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, ListenerPath: "/run/agent.sock", Syscalls: []specs.LinuxSyscall{{Names: []string{"mkdir", "sendmsg"}, Action: specs.ActNotify}}}, "syscalls[0]: SCMP_ACT_NOTIFY cannot be used for sendmsg"},
		{"notify the runtime's write", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, ListenerPath: "/run/agent.sock", Syscalls: []specs.LinuxSyscall{{Names: []string{"write"}, Action: specs.ActNotify}}}, "for write"},
	} {
		if _, err := Compile(tc.p); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want an invalid-argument error naming %s", tc.name, err, tc.msg)
		}
	}

}

// The program a helper loads is, instruction for instruction, what
// libseccomp's own seccomp_load installs for the same profile (read back
// from the kernel with PTRACE_SECCOMP_GET_FILTER): loading the exported
// program changes nothing about what a container may call.
func TestProgramIsWhatLibseccompLoads(t *testing.T) {
	profiles := map[string]*specs.LinuxSeccomp{
		"containerd's default": cseccomp.DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: testutil.DefaultCaps}}}),
		"one rule with arguments": {DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"kill"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 1, Op: specs.OpEqualTo, Value: 10}}}}},
	}
	for name, p := range profiles {
		t.Run(name, func(t *testing.T) {
			ours := loadedFilter(t, childConfig{NNP: true, Seccomp: p})
			theirs := loadedFilter(t, childConfig{NNP: true, Seccomp: p, Libseccomp: true})
			if len(ours) == 0 || !bytes.Equal(ours, theirs) {
				t.Errorf("loaded program: %d bytes from the exported program, %d from libseccomp's load, equal %v",
					len(ours), len(theirs), bytes.Equal(ours, theirs))
			}
		})
	}
}

// loadedFilter runs a child with c and returns the seccomp program the
// kernel holds for it, read through ptrace.
func loadedFilter(t *testing.T, c childConfig) []byte {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root to load seccomp filters and read them back")
	}
	c.Script = "echo ready; read x"
	cmd := testutil.ChildCommand(envChild, c)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("child: %q %v", line, err)
	}
	// ptrace requests come from the thread that attached.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid := cmd.Process.Pid
	if err := unix.PtraceAttach(pid); err != nil {
		t.Fatalf("attach: %v", err)
	}
	defer unix.PtraceDetach(pid)
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil || !ws.Stopped() {
		t.Fatalf("wait for the stop: %v %v", ws, err)
	}
	n, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(pid), 0, 0, 0, 0)
	if errno != 0 {
		t.Fatalf("PTRACE_SECCOMP_GET_FILTER: %v", errno)
	}
	prog := make([]byte, n*unix.SizeofSockFilter)
	if _, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(pid), 0, uintptr(unsafe.Pointer(&prog[0])), 0, 0); errno != 0 {
		t.Fatalf("PTRACE_SECCOMP_GET_FILTER: %v", errno)
	}
	return prog
}

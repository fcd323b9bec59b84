package security

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/internal/testutil"
)

// childConfig is what a child applies before it execs busybox sh -c Script,
// in the order a container init does.
type childConfig struct {
	Caps    *specs.LinuxCapabilities
	NNP     bool
	Seccomp *specs.LinuxSeccomp
	UID     int
	Script  string
	// Libseccomp loads the profile with libseccomp's own seccomp_load,
	// not the exported program (only with NNP).
	Libseccomp bool
}

const envChild = "TUPPER_SECURITY_CHILD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(envChild); cfg != "" {
		if err := child(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(120)
		}
	}
	os.Exit(m.Run())
}

func child(raw string) error {
	runtime.LockOSThread()
	var c childConfig
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return err
	}
	caps, err := ParseCapabilities(c.Caps)
	if err != nil {
		return err
	}
	filter, err := CompileSeccomp(c.Seccomp)
	if err != nil {
		return err
	}
	if !c.NNP { // loading needs CAP_SYS_ADMIN then: before the drop
		if err := filter.Load(nil); err != nil {
			return err
		}
	}
	if err := caps.DropBounding(); err != nil {
		return err
	}
	if c.UID != 0 {
		if err := KeepCapsAcrossSetuid(true); err != nil {
			return err
		}
		if err := syscall.Setgroups(nil); err != nil {
			return err
		}
		if err := syscall.Setresgid(c.UID, c.UID, c.UID); err != nil {
			return err
		}
		if err := syscall.Setresuid(c.UID, c.UID, c.UID); err != nil {
			return err
		}
		if err := KeepCapsAcrossSetuid(false); err != nil {
			return err
		}
	}
	if err := caps.Apply(); err != nil {
		return err
	}
	if c.NNP {
		if err := SetNoNewPrivileges(); err != nil {
			return err
		}
		if c.Libseccomp {
			f, _, err := buildFilter(c.Seccomp)
			if err != nil {
				return err
			}
			if err := f.Load(); err != nil {
				return err
			}
		} else if err := filter.Load(nil); err != nil {
			return err
		}
	}
	os.Unsetenv(envChild)
	return syscall.Exec("/bin/busybox", []string{"sh", "-c", c.Script}, os.Environ())
}

func runChild(t *testing.T, c childConfig) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root to drop capabilities and load seccomp filters")
	}
	b, _ := json.Marshal(c)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envChild+"="+string(b))
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 120 {
		t.Fatalf("child setup failed: %s", out)
	}
	return string(out)
}

// defaultCaps is containerd's default capability set for a container.
var defaultCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}

func mask(names []string) string {
	var m uint64
	for _, n := range names {
		m |= 1 << uint(capsByName[n])
	}
	return fmt.Sprintf("%016x", m)
}

func statusField(t *testing.T, status, field string) string {
	t.Helper()
	for _, l := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in:\n%s", field, status)
	return ""
}

func TestCapabilitySetsAndNoNewPrivs(t *testing.T) {
	for _, tc := range []struct {
		name string
		uid  int
		caps *specs.LinuxCapabilities
	}{
		{"root, containerd defaults", 0, &specs.LinuxCapabilities{Bounding: defaultCaps, Effective: defaultCaps, Permitted: defaultCaps}},
		{"user 1000 with ambient", 1000, &specs.LinuxCapabilities{
			Bounding: defaultCaps, Effective: []string{"CAP_NET_BIND_SERVICE"}, Permitted: []string{"CAP_NET_BIND_SERVICE"},
			Inheritable: []string{"CAP_NET_BIND_SERVICE"}, Ambient: []string{"CAP_NET_BIND_SERVICE"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := runChild(t, childConfig{Caps: tc.caps, NNP: true, UID: tc.uid, Script: "cat /proc/self/status"})
			for field, want := range map[string]string{
				"CapBnd": mask(tc.caps.Bounding), "CapEff": mask(tc.caps.Effective), "CapPrm": mask(tc.caps.Permitted),
				"CapInh": mask(tc.caps.Inheritable), "CapAmb": mask(tc.caps.Ambient), "NoNewPrivs": "1",
				"Uid": fmt.Sprintf("%d\t%d\t%d\t%d", tc.uid, tc.uid, tc.uid, tc.uid),
			} {
				if got := statusField(t, out, field); got != want {
					t.Errorf("%s = %s, want %s", field, got, want)
				}
			}
		})
	}
	out := runChild(t, childConfig{Caps: &specs.LinuxCapabilities{Bounding: defaultCaps}, Script: "cat /proc/self/status"})
	if got := statusField(t, out, "NoNewPrivs"); got != "0" {
		t.Errorf("NoNewPrivs = %s without noNewPrivileges", got)
	}
}

// containerd's default profile (what `ctr run --seccomp` uses) blocks these
// even for a process that still holds every capability.
func TestDefaultProfileBlocks(t *testing.T) {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: defaultCaps}}}
	profile := seccomp.DefaultProfile(spec)
	// Every capability this process holds (these machines lack CAP_SYS_RESOURCE).
	all := make([]string, 0, len(capsByName))
	last, _ := capability.LastCap()
	for n, c := range capsByName {
		if held, _ := capability.GetBound(c); c <= last && held {
			all = append(all, n)
		}
	}
	script := `grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status
unshare -m true 2>&1 || echo unshare-blocked
mkdir -p /tmp/tupper-sec-mnt; mount -t tmpfs none /tmp/tupper-sec-mnt 2>&1 && { umount /tmp/tupper-sec-mnt; echo mount-allowed; } || echo mount-blocked
rmdir /tmp/tupper-sec-mnt`
	out := runChild(t, childConfig{
		Caps: &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all},
		NNP:  true, Seccomp: profile, Script: script,
	})
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
	out = runChild(t, childConfig{Caps: &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}, NNP: true,
		Script: "unshare -m true && echo unshare-ok"})
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

func TestBadProfilesAndCaps(t *testing.T) {
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
		if _, err := CompileSeccomp(tc.p); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want an invalid-argument error naming %s", tc.name, err, tc.msg)
		}
	}
	if _, err := ParseCapabilities(&specs.LinuxCapabilities{Effective: []string{"CAP_FLY"}}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "CAP_FLY") {
		t.Errorf("unknown capability: %v", err)
	}
}

func TestSysctls(t *testing.T) {
	ns := func(types ...specs.LinuxNamespaceType) []specs.LinuxNamespace {
		var out []specs.LinuxNamespace
		for _, t := range types {
			out = append(out, specs.LinuxNamespace{Type: t})
		}
		return out
	}
	for _, tc := range []struct {
		key  string
		ns   []specs.LinuxNamespace
		fail string
	}{
		{"kernel.shmmax", ns(specs.IPCNamespace), ""},
		{"fs.mqueue.msg_max", ns(specs.IPCNamespace), ""},
		{"net.ipv4.ip_unprivileged_port_start", ns(specs.NetworkNamespace), ""},
		{"kernel.domainname", ns(specs.UTSNamespace), ""},
		{"net.ipv4.ip_forward", ns(specs.IPCNamespace), "shares with the host"},
		{"kernel.shmmax", nil, "shares with the host"},
		{"vm.swappiness", ns(specs.IPCNamespace, specs.NetworkNamespace), "not namespaced"},
		{"kernel.panic", ns(specs.IPCNamespace, specs.UTSNamespace), "not namespaced"},
		{"net/../../kernel/panic", ns(specs.NetworkNamespace), "not a sysctl name"},
	} {
		err := CheckSysctls(&specs.Spec{Linux: &specs.Linux{Namespaces: tc.ns, Sysctl: map[string]string{tc.key: "1"}}})
		if tc.fail == "" && err != nil {
			t.Errorf("%s: %v", tc.key, err)
		}
		if tc.fail != "" && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.fail) || !strings.Contains(err.Error(), tc.key)) {
			t.Errorf("%s: got %v, want an error naming it and saying %q", tc.key, err, tc.fail)
		}
	}
}

func TestLSMOnHostWithout(t *testing.T) {
	if AppArmorEnabled() || SELinuxEnabled() {
		t.Log("this host has an LSM: the refusal path is not reachable here; the enabled path is tested by applying a label")
		return
	}
	spec := &specs.Spec{Process: &specs.Process{ApparmorProfile: "tupper-test"}}
	if _, err := PlanLSM(context.Background(), spec); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), AnnotationLSMOptional) {
		t.Fatalf("AppArmor profile on a host without AppArmor: %v", err)
	}
	spec.Annotations = map[string]string{AnnotationLSMOptional: "true"}
	plan, err := PlanLSM(context.Background(), spec)
	if err != nil || plan.AppArmorProfile != "" {
		t.Fatalf("optional LSM: plan %+v, %v", plan, err)
	}
	spec.Process = &specs.Process{SelinuxLabel: "system_u:system_r:container_t:s0"}
	spec.Annotations = nil
	if _, err := PlanLSM(context.Background(), spec); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "SELinux") {
		t.Fatalf("SELinux label on a host without SELinux: %v", err)
	}
}

// The program a helper loads is, instruction for instruction, what
// libseccomp's own seccomp_load installs for the same profile (read back
// from the kernel with PTRACE_SECCOMP_GET_FILTER): loading the exported
// program changes nothing about what a container may call.
func TestProgramIsWhatLibseccompLoads(t *testing.T) {
	profiles := map[string]*specs.LinuxSeccomp{
		"containerd's default": seccomp.DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: defaultCaps}}}),
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
	b, _ := json.Marshal(c)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envChild+"="+string(b))
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
	prog := make([]byte, n*sockFilterSize)
	if _, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(pid), 0, uintptr(unsafe.Pointer(&prog[0])), 0, 0); errno != 0 {
		t.Fatalf("PTRACE_SECCOMP_GET_FILTER: %v", errno)
	}
	return prog
}

package container

import (
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/internal/testutil"
	"github.com/tupper/tupper/shim/security"
	"golang.org/x/sys/unix"
)

// containerd's default profile, applied with and without no_new_privs (the
// two load orders), blocks what it blocks under runc.
func TestSeccompDefaultProfile(t *testing.T) {
	needRoot(t)
	for _, nnp := range []bool{true, false} {
		spec := testSpec("sh", "-c", `grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d ' \t'
unshare -m true 2>/dev/null || echo unshare-blocked
mkdir -p /mnt/x; mount -t tmpfs none /mnt/x 2>/dev/null || echo mount-blocked`)
		spec.Process.NoNewPrivileges = nnp
		all := append([]string{"CAP_SYS_ADMIN"}, testutil.DefaultCaps...)
		spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
		// The profile is made for a spec without CAP_SYS_ADMIN, so it does
		// not allow mount and unshare even though the process holds it.
		spec.Linux.Seccomp = seccomp.DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: testutil.DefaultCaps}}})
		out := runOK(t, spec)
		want := []string{"Seccomp:2", "unshare-blocked", "mount-blocked"}
		if nnp {
			want = append(want, "NoNewPrivs:1")
		} else {
			want = append(want, "NoNewPrivs:0")
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("noNewPrivileges=%v: want %q in:\n%s", nnp, w, out)
			}
		}
	}
}

// An exec loads the container's profile too: the program compiled at
// Create, not a filter of its own.
func TestSeccompAppliesToExecs(t *testing.T) {
	needRoot(t)
	spec := testSpec("sleep", "100")
	notsup := uint(unix.EOPNOTSUPP)
	spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
		{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &notsup},
	}}
	r := started(t, newBundle(t), spec)
	out, _ := execOut(t, r.c, "sh", "-c", `grep Seccomp: /proc/self/status | tr -d ' \t'; mkdir /tmp/x 2>&1; echo mkdir=$?`)
	for _, want := range []string{"Seccomp:2", "not supported", "mkdir=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("exec: want %q in:\n%s", want, out)
		}
	}
}

// The init helper's spec goes without the seccomp profile, whose program
// it gets instead, and without the cgroup resources; the container keeps
// both.
func TestInitConfigCarriesTheProgram(t *testing.T) {
	needRoot(t)
	spec := testSpec("true")
	spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"mkdir"}, Action: specs.ActErrno}}}
	pids := int64(10)
	spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &pids}}
	c, err := newContainer(Options{ID: "t", Bundle: newBundle(t), Spec: spec, Seccomp: testSeccomp})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := initPlan(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer plan.close()
	cfg := c.initConfig(&plan, false)
	if l := cfg.Init.Spec.Linux; l.Seccomp != nil || l.Resources != nil {
		t.Errorf("the helper's spec has seccomp %v, resources %v", l.Seccomp, l.Resources)
	}
	if p := cfg.Process.Seccomp; p == nil || len(p.Filter) == 0 {
		t.Errorf("the helper gets no seccomp program: %+v", p)
	}
	if c.spec.Linux.Seccomp == nil || c.spec.Linux.Resources == nil {
		t.Error("the container's own spec lost its profile or resources")
	}
}

func TestPersonality(t *testing.T) {
	needRoot(t)
	spec := testSpec("uname", "-m")
	spec.Linux.Personality = &specs.LinuxPersonality{Domain: specs.PerLinux32}
	if out := strings.TrimSpace(runOK(t, spec)); out != "i686" {
		t.Fatalf("uname -m under LINUX32: %q, want i686", out)
	}
}

// What the helper could not apply is refused at Create, before any process
// runs, with a message naming the problem.
func TestSecurityRefusals(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name string
		edit func(*specs.Spec)
		msg  string
	}{
		{"non-namespaced sysctl", func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"vm.swappiness": "10"} }, "vm.swappiness"},
		{"bad seccomp action", func(s *specs.Spec) { s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_SOMETIMES"} }, "SCMP_ACT_SOMETIMES"},
		{"unknown capability", func(s *specs.Spec) {
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{"CAP_TELEPORT"}}
		}, "CAP_TELEPORT"},
		{"bad personality", func(s *specs.Spec) { s.Linux.Personality = &specs.LinuxPersonality{Domain: "PDP11"} }, "PDP11"},
		{"AppArmor without AppArmor", func(s *specs.Spec) { s.Process.ApparmorProfile = "tupper-test" }, "AppArmor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := testSpec("true")
			tc.edit(spec)
			if tc.name == "AppArmor without AppArmor" && appArmorOnHost() {
				testutil.Require(t, "runs on a host without AppArmor")
			}
			_, err := create(t, newBundle(t), spec)
			if !IsInvalidSpec(err) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want an invalid-spec error naming %q", err, tc.msg)
			}
		})
	}
}

func appArmorOnHost() bool { return security.AppArmorEnabled() }

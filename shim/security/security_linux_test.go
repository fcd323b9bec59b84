package security

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/internal/testutil"
)

// childConfig is what a child applies before it execs busybox sh -c Script,
// in the order a container init does. shim/seccomp's tests load filters.
type childConfig struct {
	Caps   *specs.LinuxCapabilities
	NNP    bool
	UID    int
	Script string
}

const envChild = "TUPPER_SECURITY_CHILD"

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
	caps, err := ParseCapabilities(c.Caps)
	if err != nil {
		return err
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
		if err := SetThreadIDs(c.UID, c.UID); err != nil {
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
	}
	return syscall.Exec("/bin/busybox", []string{"sh", "-c", c.Script}, os.Environ())
}

func runChild(t *testing.T, c childConfig) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root to drop capabilities")
	}
	return testutil.RunChild(t, envChild, c)
}

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
		{"root, containerd defaults", 0, &specs.LinuxCapabilities{Bounding: testutil.DefaultCaps, Effective: testutil.DefaultCaps, Permitted: testutil.DefaultCaps}},
		{"user 1000 with ambient", 1000, &specs.LinuxCapabilities{
			Bounding: testutil.DefaultCaps, Effective: []string{"CAP_NET_BIND_SERVICE"}, Permitted: []string{"CAP_NET_BIND_SERVICE"},
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
	out := runChild(t, childConfig{Caps: &specs.LinuxCapabilities{Bounding: testutil.DefaultCaps}, Script: "cat /proc/self/status"})
	if got := statusField(t, out, "NoNewPrivs"); got != "0" {
		t.Errorf("NoNewPrivs = %s without noNewPrivileges", got)
	}
}

func TestBadCaps(t *testing.T) {
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

// TestSetThreadIDsOnlyItsThread: the ids change on the calling thread and
// on no other, so the helper does not stop every runtime thread twice on
// its way to execve (which ends them and takes the calling thread's ids).
func TestSetThreadIDsOnlyItsThread(t *testing.T) {
	testutil.NeedRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	type result struct {
		tid int
		err error
	}
	done, release := make(chan result), make(chan struct{})
	go func() {
		// Never unlocked: the thread ends with this goroutine.
		runtime.LockOSThread()
		done <- result{unix.Gettid(), SetThreadIDs(1234, 5678)}
		<-release
	}()
	r := <-done
	defer close(release)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := threadIDs(t, r.tid); got != "1234 5678" {
		t.Errorf("the calling thread has uid and gid %q, want 1234 5678", got)
	}
	if got := threadIDs(t, unix.Gettid()); got != "0 0" {
		t.Errorf("another thread has uid and gid %q, want 0 0 (only the caller's must change)", got)
	}
	// The root threads share memory with the caller: not dumpable, whatever
	// fs.suid_dumpable the id change applied.
	if d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || d != 0 {
		t.Errorf("dumpable is %d (%v) after SetThreadIDs, want 0", d, err)
	}
}

// threadIDs is "uid gid" of thread tid of this process, each checked to
// be the same for the real, effective, saved and filesystem ids.
func threadIDs(t *testing.T, tid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k != "Uid" && k != "Gid" {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 4 || f[0] != f[1] || f[0] != f[2] || f[0] != f[3] {
			t.Fatalf("thread %d: %s ids %q are not all the same", tid, k, v)
		}
		ids = append(ids, f[0])
	}
	return strings.Join(ids, " ")
}

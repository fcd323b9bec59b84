package container

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/internal/testutil"
	// The test binary is the init helper: it needs the constructor.
	_ "github.com/tupper/tupper/shim/nsenter"
)

const mappedRoot = 100000

// usernsSpec is testSpec in a new user namespace mapping 0-65535 to
// 100000-165535, as `ctr run --uidmap 0:100000:65536` asks.
func usernsSpec(args ...string) *specs.Spec {
	spec := testSpec(args...)
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: mappedRoot, Size: 65536}}
	spec.Linux.UIDMappings, spec.Linux.GIDMappings = m, m
	return spec
}

// usernsBundle is a bundle whose rootfs belongs to the mapped root (what
// ctr's chown path produces) and whose path the mapped root can search,
// as containerd makes the bundle directory for a user-namespaced task.
func usernsBundle(t *testing.T) string {
	t.Helper()
	bundle := newBundle(t)
	for d := bundle; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	err := filepath.Walk(filepath.Join(bundle, "rootfs"), func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, mappedRoot, mappedRoot)
	})
	if err != nil {
		t.Fatal(err)
	}
	return bundle
}

// joinUserns points spec's namespaces of the given types, and a user
// namespace, at those of process pid.
func joinUserns(spec *specs.Spec, pid int, types ...specs.LinuxNamespaceType) {
	for i, ns := range spec.Linux.Namespaces {
		if slices.Contains(types, ns.Type) {
			spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/%s", pid, procNsName[ns.Type])
		}
	}
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{
		Type: specs.UserNamespace, Path: fmt.Sprintf("/proc/%d/ns/user", pid)})
}

func startUserns(t *testing.T, spec *specs.Spec) (*run, string) {
	t.Helper()
	bundle := usernsBundle(t)
	r := started(t, bundle, spec)
	return r, bundle
}

// TestUserNamespace runs a container in a new user namespace: it is root
// inside, mapped to 100000 outside, with its mounts, /dev, hostname and
// capabilities in place, and what it writes belongs to the mapped root.
func TestUserNamespace(t *testing.T) {
	needRoot(t)
	spec := usernsSpec("sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; hostname; "+
		"grep CapEff /proc/self/status; echo hi > /dev/null && echo devnull-ok; ls /dev; "+
		"touch /tmp/written; mount | grep -c -e ' /proc ' -e ' /sys ' -e ' /dev/pts ' -e ' /dev/mqueue ' -e ' /dev/shm '")
	spec.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: []string{"CAP_CHOWN", "CAP_KILL"}, Effective: []string{"CAP_CHOWN", "CAP_KILL"},
		Permitted: []string{"CAP_CHOWN", "CAP_KILL"},
	}
	r, bundle := startUserns(t, spec)
	st, out := r.wait(t)
	if st != 0 {
		t.Fatalf("status %d: %s", st, out)
	}
	f := strings.Fields(out)
	want := []string{"0", "100000", "65536", "0", "100000", "65536", "0", "0", "tupper-test", "CapEff:", "0000000000000021", "devnull-ok"}
	if len(f) < len(want) || strings.Join(f[:len(want)], " ") != strings.Join(want, " ") {
		t.Fatalf("got %q\nwant prefix %q", out, want)
	}
	if n := f[len(f)-1]; n != "5" {
		t.Errorf("%s of proc, sysfs, devpts, mqueue, shm mounted: %s", n, out)
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue"} {
		if !strings.Contains(out, "\n"+d+"\n") {
			t.Errorf("/dev has no %s: %s", d, out)
		}
	}
	var st2 syscall.Stat_t
	if err := syscall.Stat(filepath.Join(bundle, "rootfs/tmp/written"), &st2); err != nil {
		t.Fatal(err)
	}
	if st2.Uid != mappedRoot || st2.Gid != mappedRoot {
		t.Errorf("file written by the container's root belongs to %d:%d on the host, want %d", st2.Uid, st2.Gid, mappedRoot)
	}
}

// TestUserNamespaceUser runs the program as a non-root user of the
// namespace: 1000 inside is 101000 outside.
func TestUserNamespaceUser(t *testing.T) {
	needRoot(t)
	spec := usernsSpec("sh", "-c", "id -u; id -G; exec sleep 100")
	spec.Process.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{5}}
	spec.Process.Rlimits = append(spec.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_NPROC", Hard: 4096, Soft: 4096})
	adj := 500
	spec.Process.OOMScoreAdj = &adj
	r, _ := startUserns(t, spec)
	// Once sh has become sleep, it has printed the ids.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", r.c.Pid())); string(b) == "sleep\n" {
			break
		}
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.c.Pid()))
	var uid string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Uid:") {
			uid = strings.Fields(l)[1]
		}
	}
	if uid != "101000" {
		t.Errorf("host uid of the process %q, want 101000", uid)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", r.c.Pid())); strings.TrimSpace(string(b)) != "500" {
		t.Errorf("oom_score_adj %q", b)
	}
	r.c.Init().Signal(syscall.SIGKILL)
	if _, out := r.wait(t); strings.Join(strings.Fields(out), " ") != "1000 1000 5" {
		t.Errorf("ids inside: %q", out)
	}
}

// TestExecJoinsUserNamespace execs into a user-namespaced container: the
// process is in the container's user (and every other) namespace, root of
// it, and sees the container's root filesystem.
func TestExecJoinsUserNamespace(t *testing.T) {
	needRoot(t)
	r, _ := startUserns(t, usernsSpec("sleep", "100"))
	out, st := execOut(t, r.c, "sh", "-c", "cat /proc/self/uid_map; id -u; hostname; for n in user mnt pid net ipc uts; do [ $(readlink /proc/1/ns/$n) = $(readlink /proc/self/ns/$n) ] || echo differs $n; done; touch /tmp/by-exec && echo ok")
	if st != 0 || strings.Join(strings.Fields(out), " ") != "0 100000 65536 0 tupper-test ok" {
		t.Fatalf("exec: status %d %q", st, out)
	}
	pid := r.c.Pid()
	for _, n := range []string{"user", "mnt"} {
		a, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, n))
		b, _ := os.Readlink("/proc/self/ns/" + n)
		if a == b {
			t.Errorf("container shares the host's %s namespace", n)
		}
	}
}

// TestJoinUserNamespaceByPath starts a second container in the first
// one's user namespace (by path) with new mount, uts and ipc namespaces
// owned by it, and joins the first one's pid and net namespaces.
func TestJoinUserNamespaceByPath(t *testing.T) {
	needRoot(t)
	a, _ := startUserns(t, usernsSpec("sleep", "100"))
	spec := testSpec("sh", "-c", "cat /proc/self/uid_map; id -u; hostname; readlink /proc/self/ns/user; ps -o comm | grep -c sleep")
	spec.Hostname = "second"
	joinUserns(spec, a.c.Pid(), specs.PIDNamespace, specs.NetworkNamespace)
	// sysfs needs the net namespace's owner: the joined one is owned by
	// the user namespace too, so it mounts.
	r := started(t, usernsBundle(t), spec)
	st, out := r.wait(t)
	want, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", a.c.Pid()))
	if st != 0 || strings.Join(strings.Fields(out), " ") != "0 100000 65536 0 second "+want+" 1" {
		t.Fatalf("status %d, got %q", st, out)
	}
}

// TestUserNamespaceRefusals: what cannot work fails Create clearly.
func TestUserNamespaceRefusals(t *testing.T) {
	needRoot(t)
	noMaps := usernsSpec("true")
	noMaps.Linux.UIDMappings = nil
	noRoot := usernsSpec("true")
	noRoot.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 1, HostID: mappedRoot, Size: 10}}
	mapsOnly := testSpec("true")
	mapsOnly.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: mappedRoot, Size: 10}}
	for name, tc := range map[string]struct {
		spec *specs.Spec
		want string
	}{
		"no maps":         {noMaps, "needs linux.uidMappings"},
		"root unmapped":   {noRoot, "must map gid 0"},
		"maps without ns": {mapsOnly, "no user namespace"},
	} {
		_, err := create(t, newBundle(t), tc.spec)
		if err == nil || !IsInvalidSpec(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an invalid-spec error with %q", name, err, tc.want)
		}
	}
}

// TestTimeNamespace: a new time namespace with a boottime offset of a
// day shows in the container's uptime; an exec joins it (through the
// constructor, like a user namespace).
func TestTimeNamespace(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/proc/self/ns/time"); err != nil {
		testutil.Require(t, "needs time namespaces (Linux >= 5.6)")
	}
	spec := testSpec("sleep", "100")
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.TimeNamespace})
	spec.Linux.TimeOffsets = map[string]specs.LinuxTimeOffset{"boottime": {Secs: 86400 * 1000}}
	r := started(t, newBundle(t), spec)
	out, st := execOut(t, r.c, "sh", "-c", "cut -d. -f1 /proc/uptime; [ $(readlink /proc/1/ns/time) = $(readlink /proc/self/ns/time) ] && echo same")
	f := strings.Fields(out)
	if st != 0 || len(f) != 2 || len(f[0]) < 8 || f[1] != "same" {
		t.Fatalf("exec in the time namespace: status %d %q (want an uptime over 1000 days, same namespace)", st, out)
	}
	host, _ := os.Readlink("/proc/self/ns/time")
	if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/time", r.c.Pid())); ns == host {
		t.Errorf("container is in the host's time namespace %s", ns)
	}
}

// TestJoinUserNamespaceNewPid is CRI's shape for a container of a pod in
// a user namespace: the pod's user, net, ipc and uts namespaces by path,
// and a pid namespace of its own, which the joined user namespace owns.
// The program is PID 1 there and can mount /proc.
func TestJoinUserNamespaceNewPid(t *testing.T) {
	needRoot(t)
	a, _ := startUserns(t, usernsSpec("sleep", "100"))
	spec := testSpec("sh", "-c", "echo $$; cat /proc/self/uid_map; id -u; readlink /proc/self/ns/user; ps -o comm | grep -c sleep; hostname")
	spec.Hostname = ""
	joinUserns(spec, a.c.Pid(), specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace)
	r := started(t, usernsBundle(t), spec)
	st, out := r.wait(t)
	want, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", a.c.Pid()))
	if st != 0 || strings.Join(strings.Fields(out), " ") != "1 0 100000 65536 0 "+want+" 0 tupper-test" {
		t.Fatalf("status %d, got %q", st, out)
	}
}

// TestUserNamespaceBindSource binds a directory that the mapped root
// cannot reach (below a 0700 directory of the host's root) read-only
// into a user-namespaced container: the parent opens the source for the
// helper. The container reads it and cannot write it; a symlinked
// source resolves on the host's side.
func TestUserNamespaceBindSource(t *testing.T) {
	needRoot(t)
	secret := filepath.Join(t.TempDir(), "vol")
	os.Chmod(filepath.Dir(secret), 0o700)
	os.Mkdir(secret, 0o755)
	os.WriteFile(filepath.Join(secret, "data"), []byte("from the host\n"), 0o644)
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(secret, link)
	spec := usernsSpec("sh", "-c", "cat /vol/data /vol2/data; touch /vol/x 2>/dev/null || echo ro")
	spec.Mounts = append(spec.Mounts,
		specs.Mount{Destination: "/vol", Type: "bind", Source: secret, Options: []string{"rbind", "ro"}},
		specs.Mount{Destination: "/vol2", Type: "bind", Source: link, Options: []string{"bind"}})
	r, _ := startUserns(t, spec) // after usernsBundle's chmods
	st, out := r.wait(t)
	if st != 0 || out != "from the host\nfrom the host\nro\n" {
		t.Fatalf("status %d, output %q", st, out)
	}
}

// TestUserNamespaceCgroup: a user-namespaced container with a cgroup
// namespace is in its cgroup from the start, sees it as its root and
// mounts the v1 hierarchies (read-only) inside its user namespace; an
// exec joins both. Moved in by the parent or moving itself (the tasks
// files were opened by host root: the write is allowed by the opener's
// credentials, not the helper's).
func TestUserNamespaceCgroup(t *testing.T) {
	for _, selfJoin := range []bool{false, true} {
		t.Run(fmt.Sprintf("selfJoin=%v", selfJoin), func(t *testing.T) { testUserNamespaceCgroup(t, selfJoin) })
	}
}

func testUserNamespaceCgroup(t *testing.T, selfJoin bool) {
	needRoot(t)
	spec := cgroupSpec(true, "sh", "-c", "grep ':pids:' /proc/self/cgroup; cat /sys/fs/cgroup/pids/pids.max; touch /sys/fs/cgroup/pids/x 2>/dev/null && echo rw || echo ro; sleep 100")
	u := usernsSpec("true")
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	spec.Linux.UIDMappings, spec.Linux.GIDMappings = u.Linux.UIDMappings, u.Linux.GIDMappings
	r, m, _ := withCgroupBundle(t, usernsBundle(t), spec, selfJoin)
	if err := r.c.Start(); err != nil {
		t.Fatal(err)
	}
	if pids, err := m.Pids(); err != nil || !contains(pids, r.c.Pid()) {
		t.Fatalf("cgroup holds %v (%v), not init %d", pids, err, r.c.Pid())
	}
	out, st := execOut(t, r.c, "sh", "-c", "grep ':pids:' /proc/self/cgroup; id -u")
	if st != 0 || !strings.HasSuffix(strings.TrimSpace(out), ":pids:/\n0") {
		t.Errorf("exec: status %d %q", st, out)
	}
	r.out.waitFor(t, "\nro\n")
	r.c.Init().Signal(syscall.SIGKILL)
	if _, got := r.wait(t); !strings.HasSuffix(got, ":pids:/\n64\nro\n") {
		t.Errorf("container sees:\n%s", got)
	}
}

// TestExecTerminalUserNamespace: an exec with a terminal in a
// user-namespaced container gets a pty of the container's devpts, owned
// by the process' user.
func TestExecTerminalUserNamespace(t *testing.T) {
	needRoot(t)
	r, _ := startUserns(t, usernsSpec("sleep", "100"))
	proc := &specs.Process{Terminal: true, Args: []string{"sh", "-c", "tty; stat -c %u $(tty)"}, Env: []string{"PATH=/bin"}, Cwd: "/",
		User: specs.User{UID: 1000, GID: 1000}}
	p, err := r.c.Exec(proc, Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	con := p.Console()
	defer con.Close()
	out, _ := io.ReadAll(con)
	p.Wait()
	if f := strings.Fields(string(out)); len(f) != 2 || !strings.HasPrefix(f[0], "/dev/pts/") || f[1] != "1000" {
		t.Fatalf("tty output %q", out)
	}
}

// TestIDMappedMount binds a host directory owned by the host's root into a
// user-namespaced container with the container's own mappings: inside,
// root owns it and can write, and what it writes belongs to root on the
// host. A second mount with other mappings (0 -> 2000) gets a throwaway
// user namespace; a container without a user namespace can have one too.
func TestIDMappedMount(t *testing.T) {
	needRoot(t)
	vol := filepath.Join(t.TempDir(), "vol")
	os.Mkdir(vol, 0o755)
	os.WriteFile(filepath.Join(vol, "data"), []byte("x"), 0o644)
	spec := usernsSpec("sh", "-c", "stat -c %u:%g /vol/data /other/data; touch /vol/new && echo written")
	other := []specs.LinuxIDMapping{{ContainerID: 2000, HostID: 0, Size: 1}}
	spec.Mounts = append(spec.Mounts,
		specs.Mount{Destination: "/vol", Type: "bind", Source: vol, Options: []string{"rbind"},
			UIDMappings: spec.Linux.UIDMappings, GIDMappings: spec.Linux.GIDMappings},
		specs.Mount{Destination: "/other", Type: "bind", Source: vol, Options: []string{"bind", "ro"},
			UIDMappings: other, GIDMappings: other})
	r, _ := startUserns(t, spec)
	st, out := r.wait(t)
	// /other: on-disk 0 shows as 2000 to the mount's namespace, which maps
	// to nothing in the container's: overflow ids.
	if st != 0 || out != "0:0\n65534:65534\nwritten\n" {
		t.Fatalf("status %d, output %q", st, out)
	}
	var fst syscall.Stat_t
	if err := syscall.Stat(filepath.Join(vol, "new"), &fst); err != nil || fst.Uid != 0 || fst.Gid != 0 {
		t.Errorf("file written through the idmapped mount: %v %d:%d, want 0:0 on the host", err, fst.Uid, fst.Gid)
	}

	plain := testSpec("stat", "-c", "%u:%g", "/other/data")
	plain.Mounts = append(plain.Mounts, specs.Mount{Destination: "/other", Type: "bind", Source: vol, Options: []string{"bind"},
		UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 3000, Size: 1}}, GIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 3000, Size: 1}}})
	if out := runOK(t, plain); out != "3000:3000\n" {
		t.Errorf("idmapped mount without a user namespace: %q", out)
	}
}

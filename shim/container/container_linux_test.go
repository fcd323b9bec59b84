package container

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/internal/testutil"
	"github.com/tupper/tupper/shim/seccomp"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	MaybeInit()
	code := m.Run()
	if tupperRunDir != "" {
		os.RemoveAll(tupperRunDir)
	}
	os.Exit(code)
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testutil.Require(t, "needs /bin/busybox (busybox-static)")
	}
}

// newBundle makes a bundle whose rootfs holds a static busybox and its
// applet links, plus a passwd/group file.
func newBundle(t testing.TB) string {
	t.Helper()
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			os.Symlink("busybox", filepath.Join(rootfs, "bin", a))
		}
	}
	os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/tmp:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(rootfs, "etc/group"), []byte("root:x:0:\nalice:x:1000:\n"), 0o644)
	return bundle
}

// testSpec is close to what `ctr run` produces (pkg/oci defaults).
func testSpec(args ...string) *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/bin"},
			Cwd:  "/",
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024},
			},
			NoNewPrivileges: true,
		},
		Hostname: "tupper-test",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
			},
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/bus"},
		},
	}
}

type run struct {
	c   *Container
	out *outBuffer
	r   *os.File
	end chan struct{}
}

// outBuffer is a container's output, which a test can wait on.
type outBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{} // closed and replaced on every write
}

func newOutBuffer() *outBuffer { return &outBuffer{wrote: make(chan struct{})} }

func (o *outBuffer) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	close(o.wrote)
	o.wrote = make(chan struct{})
	return o.b.Write(p)
}

func (o *outBuffer) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// waitFor waits until the output contains want.
func (o *outBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		o.mu.Lock()
		got, wrote := o.b.String(), o.wrote
		o.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		select {
		case <-wrote:
		case <-deadline:
			t.Fatalf("output never contained %q:\n%s", want, got)
		}
	}
}

// create creates a container whose stdout and stderr go to a buffer.
// started is create and Start; the test fails if either does.
func started(t *testing.T, bundle string, spec *specs.Spec) *run {
	t.Helper()
	r, err := create(t, bundle, spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := r.c.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	return r
}

// testSeccomp compiles the tests' seccomp profiles, as the shim's cache
// does, without sharing them.
var testSeccomp = seccomp.NewCache("")

func create(t *testing.T, bundle string, spec *specs.Spec) (*run, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Create(Options{ID: "t", Bundle: bundle, Spec: spec, Stdio: Stdio{Stdout: w, Stderr: w}, Seccomp: testSeccomp})
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	rr := &run{c: c, out: newOutBuffer(), r: r, end: make(chan struct{})}
	go func() { io.Copy(rr.out, r); close(rr.end) }()
	t.Cleanup(func() {
		c.Init().Signal(unix.SIGKILL)
		c.Init().Wait()
		r.Close()
	})
	return rr, nil
}

func (r *run) wait(t *testing.T) (int, string) {
	t.Helper()
	select {
	case <-r.c.Init().Done():
	case <-time.After(20 * time.Second):
		t.Fatal("container did not exit")
	}
	st, _, err := r.c.Init().Wait()
	if err != nil {
		t.Fatal(err)
	}
	<-r.end
	return st, r.out.String()
}

func runOK(t *testing.T, spec *specs.Spec) string {
	t.Helper()
	r := started(t, newBundle(t), spec)
	st, out := r.wait(t)
	if st != 0 {
		t.Fatalf("exit status %d, output:\n%s", st, out)
	}
	return out
}

func TestContainerView(t *testing.T) {
	needRoot(t)
	spec := testSpec("sh", "-c", `
echo pid=$$
echo host=$(hostname)
echo ids=$(id -u):$(id -g):$(id -G)
echo nofile=$(ulimit -n)
echo umask=$(umask)
echo keys=$(wc -c < /proc/keys)
echo firmware=$(ls /sys/firmware | wc -l)
echo > /proc/sys/kernel/domainname && echo procsys=rw || echo procsys=ro
echo nnp=$(grep NoNewPrivs /proc/self/status | tr -d ' \t')
echo ports=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start) domain=$(cat /proc/sys/kernel/domainname)
echo nprocs=$(ls -d /proc/[0-9]* | wc -l)
ls /dev | tr '\n' ' '; echo
cat /proc/self/mountinfo`)
	uid := uint32(1000)
	spec.Process.User = specs.User{UID: uid, GID: uid, AdditionalGids: []uint32{5, 7}}
	um := uint32(0o027)
	spec.Process.User.Umask = &um
	spec.Process.Cwd = "/tmp"
	spec.Domainname = "example.org"
	spec.Linux.Sysctl = map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"}
	out := runOK(t, spec)
	for _, want := range []string{"pid=1\n", "host=tupper-test\n", "ids=1000:1000:1000 5 7\n", "nofile=1024\n", "umask=0027\n",
		"keys=0\n", "firmware=0\n", "procsys=ro\n", "nnp=NoNewPrivs:1\n", "ports=0 domain=example.org\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Two processes at most: sh and the ls itself (wc runs in a pipe).
	if !strings.Contains(out, "nprocs=") || strings.Contains(out, "nprocs=0") {
		t.Errorf("bad process count:\n%s", out)
	}
	devs := map[string]bool{}
	for i, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "nprocs=") {
			for _, d := range strings.Fields(strings.Split(out, "\n")[i+1]) {
				devs[d] = true
			}
		}
	}
	for _, dev := range []string{"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue", "fd", "stdin", "stdout", "stderr"} {
		if !devs[dev] {
			t.Errorf("/dev lacks %s: %v", dev, devs)
		}
	}
	// Every mount point is the root or one of the spec's (plus masks).
	allowed := map[string]bool{"/": true}
	for _, m := range spec.Mounts {
		allowed[m.Destination] = true
	}
	for _, p := range append(spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths...) {
		allowed[p] = true
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && strings.Contains(l, " - ") {
			if !allowed[f[4]] {
				t.Errorf("unexpected mount point %s: %s", f[4], l)
			}
		}
	}
}

func TestExitStatus(t *testing.T) {
	needRoot(t)
	r := started(t, newBundle(t), testSpec("sh", "-c", "exit 7"))
	if st, out := r.wait(t); st != 7 {
		t.Fatalf("status %d, want 7 (%s)", st, out)
	}
}

func TestCreateBlocksUntilStart(t *testing.T) {
	needRoot(t)
	r, err := create(t, newBundle(t), testSpec("echo", "started"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.c.Init().Done():
		t.Fatal("init exited before start")
	default:
	}
	if r.out.String() != "" {
		t.Fatalf("output before start: %q", r.out.String())
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", r.c.Pid()))
	if !strings.HasPrefix(string(cmdline), "tupper-init") {
		t.Fatalf("created init is %q", cmdline)
	}
	if err := r.c.Start(); err != nil {
		t.Fatal(err)
	}
	if st, out := r.wait(t); st != 0 || out != "started\n" {
		t.Fatalf("status %d output %q", st, out)
	}
}

// An execve that fails after Start is the process' own failure, as under
// runc (whose start does not wait for the execve either): Start and Exec
// succeed, and the process writes runc's line to its stderr and exits
// with 255. A script whose interpreter is missing passes the executable
// check of Create, and fails only there.
func TestExecveFailureAfterStart(t *testing.T) {
	needRoot(t)
	bundle := newBundle(t)
	if err := os.WriteFile(filepath.Join(bundle, "rootfs/s.sh"), []byte("#!/nonexistent/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	const want = "exec /s.sh: no such file or directory\n"
	r := started(t, bundle, testSpec("/s.sh"))
	if st, out := r.wait(t); st != 255 || out != want {
		t.Errorf("init: status %d output %q, want 255 %q", st, out, want)
	}
	r = started(t, bundle, testSpec("sleep", "100"))
	if out, st := execOut(t, r.c, "/s.sh"); st != 255 || out != want {
		t.Errorf("exec: status %d output %q, want 255 %q", st, out, want)
	}
}

func TestExecJoinsEverything(t *testing.T) {
	needRoot(t)
	r := started(t, newBundle(t), testSpec("sleep", "100"))
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	proc := &specs.Process{Args: []string{"sh", "-c", "echo pid=$$; hostname; ls /; for n in mnt pid net ipc uts; do readlink /proc/1/ns/$n; readlink /proc/self/ns/$n; done"},
		Env: []string{"PATH=/bin"}, Cwd: "/"}
	p, err := r.c.Exec(proc, Stdio{Stdout: pw, Stderr: pw})
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(pr)
	st, _, _ := p.Wait()
	if st != 0 {
		t.Fatalf("exec status %d: %s", st, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if lines[0] == "pid=1" || !strings.HasPrefix(lines[0], "pid=") {
		t.Errorf("exec pid line %q", lines[0])
	}
	if lines[1] != "tupper-test" {
		t.Errorf("hostname %q", lines[1])
	}
	if !strings.Contains(string(out), "busybox") && !strings.Contains(string(out), "bin") {
		t.Errorf("exec does not see the container root: %s", out)
	}
	ns := lines[len(lines)-10:]
	for i := 0; i < 10; i += 2 {
		if ns[i] != ns[i+1] {
			t.Errorf("exec namespace %s differs from init's %s", ns[i+1], ns[i])
		}
	}
	pids, err := r.c.Pids()
	if err != nil || len(pids) != 1 || pids[0] != r.c.Pid() {
		t.Errorf("pids %v %v", pids, err)
	}
	if err := r.c.KillAll(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.wait(t); st != 128+9 {
		t.Errorf("status after kill %d", st)
	}
}

func TestExecTerminal(t *testing.T) {
	needRoot(t)
	r := started(t, newBundle(t), testSpec("sleep", "100"))
	proc := &specs.Process{Terminal: true, Args: []string{"sh", "-c", "tty; stty size"}, Env: []string{"PATH=/bin"}, Cwd: "/",
		ConsoleSize: &specs.Box{Height: 33, Width: 77}}
	p, err := r.c.Exec(proc, Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	con := p.Console()
	defer con.Close()
	out, _ := io.ReadAll(con) // EIO once the slave is gone
	p.Wait()
	if !strings.Contains(string(out), "/dev/pts/") || !strings.Contains(string(out), "33 77") {
		t.Fatalf("tty output %q", out)
	}
}

// TestJoinByPath starts a second container in the first one's network,
// ipc, uts and pid namespaces.
func TestJoinByPath(t *testing.T) {
	needRoot(t)
	a := started(t, newBundle(t), testSpec("sleep", "100"))
	spec := testSpec("sh", "-c", "hostname; ps -o pid,comm | grep -c sleep; for n in net ipc uts pid; do readlink /proc/self/ns/$n; done")
	spec.Hostname = ""
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type != specs.MountNamespace {
			spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/%s", a.c.Pid(), procNsName[ns.Type])
		}
	}
	out := runOK(t, spec)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != "tupper-test" || lines[1] != "1" {
		t.Errorf("joined container sees %q", out)
	}
	for i, n := range []string{"net", "ipc", "uts", "pid"} {
		want, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", a.c.Pid(), n))
		if lines[2+i] != want {
			t.Errorf("%s namespace %s, want %s", n, lines[2+i], want)
		}
	}
}

// mountsUnder lists host mount points below dir.
func mountsUnder(t *testing.T, dir string) []string {
	ms, err := testutil.MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestInvalidSpecs(t *testing.T) {
	needRoot(t)
	cases := map[string]struct {
		mutate func(bundle string, s *specs.Spec)
		want   string
	}{
		"relative root escaping bundle": {func(_ string, s *specs.Spec) { s.Root.Path = "../../etc" }, "escapes the bundle"},
		"unknown namespace":             {func(_ string, s *specs.Spec) { s.Linux.Namespaces[0].Type = "bogus" }, `unknown namespace type "bogus"`},
		"mount escaping rootfs": {func(b string, s *specs.Spec) {
			os.Symlink("../../../../../../tmp", filepath.Join(b, "rootfs/escape"))
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/escape/x", Type: "tmpfs", Source: "tmpfs"})
		}, "escapes the rootfs"},
		"missing executable": {func(_ string, s *specs.Spec) { s.Process.Args = []string{"no-such-binary"} }, `executable "no-such-binary" not found`},
		"unknown user":       {func(_ string, s *specs.Spec) { s.Process.User.Username = "nobody-here" }, `unknown user "nobody-here"`},
		"bad ns path": {func(_ string, s *specs.Spec) {
			s.Linux.Namespaces[0].Path = "/proc/self/ns/net"
		}, "is not a pid namespace"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			bundle := newBundle(t)
			spec := testSpec("true")
			tc.mutate(bundle, spec)
			r, err := create(t, bundle, spec)
			if err == nil {
				r.c.Init().Signal(unix.SIGKILL)
				t.Fatalf("create succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
			if !IsInvalidSpec(err) {
				t.Errorf("error %q is not marked as an invalid spec", err)
			}
			if ms := mountsUnder(t, bundle); len(ms) != 0 {
				t.Fatalf("left mounts behind: %v", ms)
			}
			// No helper left: every child of ours has been reaped.
			var ws unix.WaitStatus
			if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); pid > 0 {
				t.Fatalf("left a child %d (%v)", pid, err)
			}
		})
	}
}

// capMask is the /proc/self/status bit mask of the named capabilities.
func capMask(names []string) (uint64, error) {
	bits := map[string]capability.Cap{}
	for _, c := range capability.ListKnown() {
		bits["CAP_"+strings.ToUpper(c.String())] = c
	}
	var m uint64
	for _, n := range names {
		c, ok := bits[n]
		if !ok {
			return 0, fmt.Errorf("unknown capability %s", n)
		}
		m |= 1 << uint(c)
	}
	return m, nil
}

func TestCapabilities(t *testing.T) {
	needRoot(t)
	want, err := capMask(testutil.DefaultCaps)
	if err != nil {
		t.Fatal(err)
	}
	spec := testSpec("sh", "-c", "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | tr -d ' \\t'")
	spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: testutil.DefaultCaps, Effective: testutil.DefaultCaps, Permitted: testutil.DefaultCaps}
	out := runOK(t, spec)
	hex := fmt.Sprintf("%016x", want)
	for _, line := range []string{"CapInh:0000000000000000", "CapPrm:" + hex, "CapEff:" + hex, "CapBnd:" + hex, "CapAmb:0000000000000000"} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("want %s in\n%s", line, out)
		}
	}
	// A non-root user keeps only ambient capabilities across execve.
	spec = testSpec("sh", "-c", "grep -E '^Cap(Eff|Amb)' /proc/self/status | tr -d ' \\t'")
	spec.Process.User = specs.User{UID: 1000, GID: 1000}
	amb := []string{"CAP_NET_BIND_SERVICE"}
	spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: testutil.DefaultCaps, Effective: testutil.DefaultCaps, Permitted: testutil.DefaultCaps, Inheritable: amb, Ambient: amb}
	out = runOK(t, spec)
	if !strings.Contains(out, "CapEff:0000000000000400\n") || !strings.Contains(out, "CapAmb:0000000000000400\n") {
		t.Errorf("non-root caps:\n%s", out)
	}
}

// TestRlimitNofile checks the spec's RLIMIT_NOFILE reaches the program
// even when the helper's Go runtime raised its own soft limit (it does
// when soft < hard, and restores the original at execve).
func TestRlimitNofile(t *testing.T) {
	needRoot(t)
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Max < 2048 {
		testutil.Require(t, "needs a hard RLIMIT_NOFILE of 2048 or more")
	}
	low := unix.Rlimit{Cur: 512, Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	spec := testSpec("sh", "-c", "ulimit -n; ulimit -Hn")
	// Keep the hard limit: restoring the original then needs no
	// CAP_SYS_RESOURCE, so a wrongly restored limit would show.
	spec.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1000, Hard: old.Max}}
	if out := runOK(t, spec); out != fmt.Sprintf("1000\n%d\n", old.Max) {
		t.Fatalf("nofile %q", out)
	}
}

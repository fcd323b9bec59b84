package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestHelperBinarySealed: a helper's binary, as /proc/<pid>/exe shows it
// to anyone who may look, cannot be opened for writing (CVE-2019-5736):
// it is this binary through a read-only overlay, not the file on disk.
func TestHelperBinarySealed(t *testing.T) {
	needRoot(t)
	r, err := create(t, newBundle(t), testSpec("true"))
	if err != nil {
		t.Fatal(err)
	}
	exe := fmt.Sprintf("/proc/%d/exe", r.c.Pid())
	link, err := os.Readlink(exe)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Readlink("/proc/self/exe")
	if link == self {
		t.Errorf("the helper runs %s itself, not a sealed view of it", link)
	}
	if strings.HasPrefix(link, "/memfd:") {
		t.Errorf("overlayfs sealing is unavailable here; the helper binary is a memfd copy (%s)", link)
	}
	f, err := os.OpenFile(exe, os.O_WRONLY, 0)
	if err == nil {
		f.Close()
		t.Fatalf("opened the helper's binary %s (%s) for writing", exe, link)
	}
	if !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.ETXTBSY) {
		t.Errorf("opening the helper's binary for writing: %v, want EROFS", err)
	}
}

// The tests below try, on tupper (cmd/tupper-run) and on runc with the
// same bundle, what a hostile spec or image tries, and assert that tupper
// holds everything runc holds.

// tupperRunDir holds the tupper-run that tupperRun built; TestMain
// removes it.
var tupperRunDir string

// tupperRun builds cmd/tupper-run, unless TUPPER_TEST_TUPPER_RUN names
// one to test (an older build shows what each test catches).
var tupperRun = sync.OnceValues(func() (string, error) {
	if bin := os.Getenv("TUPPER_TEST_TUPPER_RUN"); bin != "" {
		return bin, nil
	}
	dir, err := os.MkdirTemp("", "tupper-run-test-")
	if err != nil {
		return "", err
	}
	tupperRunDir = dir
	out := filepath.Join(dir, "tupper-run")
	b, err := exec.Command("go", "build", "-o", out, "github.com/tupper/tupper/cmd/tupper-run").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build tupper-run: %v\n%s", err, b)
	}
	return out, nil
})

// runtimes are what each hostile test runs on.
var runtimes = []string{"tupper", "runc"}

// runBundle runs spec in bundle on runtime with files inherited as fds 3,
// 4, ... without close-on-exec (a careless caller's), and returns the exit
// status and the output. A runtime that refuses the bundle exits non-zero
// with its error in the output.
func runBundle(t *testing.T, runtime, bundle string, spec *specs.Spec, files ...*os.File) (int, string) {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("hostile-%d", time.Now().UnixNano())
	var cmd *exec.Cmd
	switch runtime {
	case "tupper":
		bin, err := tupperRun()
		if err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(bin, "-id", id, bundle)
	case "runc":
		if _, err := exec.LookPath("runc"); err != nil {
			testutil.Require(t, "needs runc (make deps)")
		}
		cmd = exec.Command("runc", "--root", t.TempDir(), "run", "--bundle", bundle, id)
	}
	cmd.ExtraFiles = files
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", runtime, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// TestHostileLeakedFds: fds a careless caller leaves open (here on the
// host's /) never reach the container's process.
func TestHostileLeakedFds(t *testing.T) {
	needRoot(t)
	var files []*os.File
	for i := 0; i < 8; i++ {
		fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY, 0) // not close-on-exec
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, os.NewFile(uintptr(fd), "host-root"))
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, rt := range runtimes {
		st, out := runBundle(t, rt, newBundle(t), testSpec("ls", "/proc/self/fd"), files...)
		if st != 0 || strings.Join(strings.Fields(out), " ") != "0 1 2 3" {
			t.Errorf("%s: status %d, the container's fds are %q, want 0 1 2 and ls's own", rt, st, out)
		}
	}
}

// TestHostileCwd: process.cwd /proc/self/fd/N, which could name a bind
// source the parent opened for a user-namespaced helper (a host
// directory), never starts the process outside its root.
func TestHostileCwd(t *testing.T) {
	needRoot(t)
	host := t.TempDir()
	src := filepath.Join(host, "vol")
	os.Mkdir(src, 0o755)
	os.WriteFile(filepath.Join(host, "secret"), []byte("host-secret\n"), 0o644)
	for _, rt := range runtimes {
		for n := 3; n < 16; n++ {
			spec := usernsSpec("sh", "-c", "cat ../secret; cat secret; pwd")
			spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/mnt", Type: "bind", Source: src, Options: []string{"rbind"}})
			spec.Process.Cwd = fmt.Sprintf("/proc/self/fd/%d", n)
			st, out := runBundle(t, rt, usernsBundle(t), spec)
			if strings.Contains(out, "host-secret") {
				t.Errorf("%s, cwd fd %d: status %d, the process read a host file from its cwd:\n%s", rt, n, st, out)
			}
		}
	}
}

// TestHostileKeyring: a key in the caller's session keyring is out of the
// container's reach: it gets a session keyring of its own.
func TestHostileKeyring(t *testing.T) {
	needRoot(t)
	probe := buildProbe(t)
	desc := fmt.Sprintf("tupper-test-%d", time.Now().UnixNano())
	runtime.LockOSThread() // the session keyring is per thread until exec
	defer runtime.UnlockOSThread()
	if _, err := unix.KeyctlJoinSessionKeyring(desc + "-session"); err != nil {
		t.Fatal(err)
	}
	id, err := unix.AddKey("user", desc, []byte("host-key"), unix.KEY_SPEC_SESSION_KEYRING)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_SESSION_KEYRING, 0, 0)
	for _, rt := range runtimes {
		bundle := newBundle(t)
		copyFile(t, probe, filepath.Join(bundle, "rootfs/probe"))
		st, out := runBundle(t, rt, bundle, testSpec("/probe", "keyring", desc))
		if st != 0 || !strings.HasPrefix(out, "denied:") {
			t.Errorf("%s: status %d, the container reached the caller's key: %q", rt, st, out)
		}
	}
}

// TestHostileDevNull: without a /dev of the spec's, an image whose
// /dev/null links to a /proc/sys file must not turn masked paths into a
// writable view of that file.
func TestHostileDevNull(t *testing.T) {
	needRoot(t)
	for _, rt := range runtimes {
		bundle := newBundle(t)
		os.Symlink("/proc/sys/kernel/domainname", filepath.Join(bundle, "rootfs/dev/null"))
		spec := testSpec("sh", "-c", "echo pwned > /proc/keys; cat /proc/sys/kernel/domainname")
		spec.Mounts = withoutMount(spec.Mounts, "/dev")
		spec.Linux.MaskedPaths = []string{"/proc/keys"}
		st, out := runBundle(t, rt, bundle, spec)
		if st == 0 || strings.Contains(out, "pwned") {
			t.Errorf("%s: status %d, the masked /proc/keys wrote through to a sysctl:\n%s", rt, st, out)
		}
	}
}

// TestHostileProcVolume: nothing but procfs goes at /proc, and nothing
// covers a path below it (a volume there would take the LSM labels and
// sysctls the runtime writes).
func TestHostileProcVolume(t *testing.T) {
	needRoot(t)
	fake := t.TempDir()
	for _, dest := range []string{"/proc", "/proc/sys/kernel", "/proc/thread-self/attr"} {
		for _, rt := range runtimes {
			spec := testSpec("true")
			spec.Mounts = append(spec.Mounts, specs.Mount{Destination: dest, Type: "bind", Source: fake, Options: []string{"rbind"}})
			if st, out := runBundle(t, rt, newBundle(t), spec); st == 0 {
				t.Errorf("%s: a volume at %s was accepted:\n%s", rt, dest, out)
			}
		}
	}
}

// TestHostileUID: uid 4294967295, which setresuid reads as "unchanged",
// never leaves the process root.
func TestHostileUID(t *testing.T) {
	needRoot(t)
	for _, rt := range runtimes {
		spec := testSpec("id", "-u")
		spec.Process.User = specs.User{UID: 4294967295, GID: 4294967295}
		if st, out := runBundle(t, rt, newBundle(t), spec); st == 0 {
			t.Errorf("%s: uid 4294967295 ran as %q", rt, out)
		}
	}
}

// TestHostileHostNetSysctl: a container joining the host's network
// namespace by path may not set its sysctls. The value asked is the
// current one, so a failure changes nothing.
func TestHostileHostNetSysctl(t *testing.T) {
	needRoot(t)
	cur, err := os.ReadFile("/proc/sys/net/ipv4/tcp_ecn")
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range runtimes {
		spec := testSpec("true")
		spec.Linux.Namespaces = withNamespacePath(spec.Linux.Namespaces, specs.NetworkNamespace, fmt.Sprintf("/proc/%d/ns/net", os.Getpid()))
		spec.Linux.Sysctl = map[string]string{"net.ipv4.tcp_ecn": strings.TrimSpace(string(cur))}
		if st, out := runBundle(t, rt, newBundle(t), spec); st == 0 {
			t.Errorf("%s: a net sysctl in the host's network namespace was accepted:\n%s", rt, out)
		}
	}
}

func buildProbe(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "probe")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, b)
	}
	return out
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func withoutMount(ms []specs.Mount, dest string) []specs.Mount {
	var out []specs.Mount
	for _, m := range ms {
		if !strings.HasPrefix(m.Destination+"/", dest+"/") {
			out = append(out, m)
		}
	}
	return out
}

func withNamespacePath(nss []specs.LinuxNamespace, typ specs.LinuxNamespaceType, path string) []specs.LinuxNamespace {
	out := []specs.LinuxNamespace{}
	for _, ns := range nss {
		if ns.Type != typ {
			out = append(out, ns)
		}
	}
	return append(out, specs.LinuxNamespace{Type: typ, Path: path})
}

// TestHostileMountRace: a volume's directory swapped for a symlink to a
// host path, over and over, while the container is created, never puts
// the spec's tmpfs outside the root (CVE-2021-30465): each start either
// fails or has the tmpfs in its mount table (inside the volume, or where
// the symlink leads inside the root; not on the host path, which would
// leave it out of the container's mount table).
func TestHostileMountRace(t *testing.T) {
	needRoot(t)
	vol, outside := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(vol, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(vol, "x-link")); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	swapped := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				swapped <- n
				return
			default:
			}
			if unix.Renameat2(unix.AT_FDCWD, filepath.Join(vol, "x"), unix.AT_FDCWD, filepath.Join(vol, "x-link"), unix.RENAME_EXCHANGE) == nil {
				n++
			}
		}
	}()
	for _, rt := range runtimes {
		for i := 0; i < 20; i++ {
			spec := testSpec("sh", "-c", "echo mounts=$(grep -c ' racetmpfs ' /proc/self/mountinfo)")
			spec.Mounts = append(spec.Mounts,
				specs.Mount{Destination: "/vol", Type: "bind", Source: vol, Options: []string{"rbind"}},
				specs.Mount{Destination: "/vol/x", Type: "tmpfs", Source: "racetmpfs"})
			st, out := runBundle(t, rt, newBundle(t), spec)
			if ran := strings.Contains(out, "mounts="); ran && strings.TrimSpace(out) != "mounts=1" || !ran && st == 0 {
				t.Errorf("%s, start %d: status %d, the container runs without the spec's tmpfs in its mount table (%q)", rt, i, st, out)
			}
		}
	}
	close(stop)
	if n := <-swapped; n == 0 {
		t.Fatal("the volume's directory was never swapped")
	}
}

// TestHostileSeccompListener: a seccomp profile's listener fd goes to the
// agent at listenerPath on the host, never to a socket the container's
// root has at that path (it could answer its own notifications).
func TestHostileSeccompListener(t *testing.T) {
	needRoot(t)
	for _, rt := range runtimes {
		dir := fmt.Sprintf("/tmp/tsn-%d", time.Now().UnixNano()%1e9)
		os.Mkdir(dir, 0o700)
		defer os.RemoveAll(dir)
		path := dir + "/a.sock"
		bundle := newBundle(t)
		os.MkdirAll(filepath.Join(bundle, "rootfs", dir), 0o755)
		host, decoy := listenUnix(t, path), listenUnix(t, filepath.Join(bundle, "rootfs", path))
		spec := testSpec("true")
		spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, ListenerPath: path,
			Syscalls: []specs.LinuxSyscall{{Names: []string{"getppid"}, Action: specs.ActNotify}}}
		got := make(chan string, 2)
		go acceptFd(host, "host", got)
		go acceptFd(decoy, "container", got)
		st, out := runBundle(t, rt, bundle, spec)
		host.Close()
		decoy.Close()
		var who []string
		for i := 0; i < 2; i++ {
			if w := <-got; w != "" {
				who = append(who, w)
			}
		}
		if st != 0 || strings.Join(who, ",") != "host" {
			t.Errorf("%s: status %d, listener fd went to %v, want the host's agent only\n%s", rt, st, who, out)
		}
	}
}

func listenUnix(t *testing.T, path string) *net.UnixListener {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// acceptFd reports name on got when a connection to l brings an fd, and
// "" once l is closed without one.
func acceptFd(l *net.UnixListener, name string, got chan<- string) {
	c, err := l.AcceptUnix()
	if err != nil {
		got <- ""
		return
	}
	defer c.Close()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil || oobn == 0 {
		got <- ""
		return
	}
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
		if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil {
			closeAll(fds)
			got <- name
			return
		}
	}
	got <- ""
}

// TestProcessEnvLikeRunc: the program's environment is what runc makes of
// the same spec: HOME from the container's /etc/passwd for the process'
// uid ("/" when it has no entry) unless the spec sets one, the last of
// duplicate names.
func TestProcessEnvLikeRunc(t *testing.T) {
	needRoot(t)
	cases := []struct {
		uid uint32
		env []string
	}{
		{0, []string{"PATH=/bin"}},
		{1000, []string{"PATH=/bin"}},
		{1234, []string{"PATH=/bin"}},
		{0, []string{"PATH=/bin", "HOME="}},
		{1000, []string{"PATH=/bin", "HOME=/x", "A=1", "A=2"}},
	}
	for _, c := range cases {
		got := map[string]string{}
		for _, rt := range runtimes {
			spec := testSpec("env")
			spec.Process.User = specs.User{UID: c.uid, GID: c.uid}
			spec.Process.Env = c.env
			st, out := runBundle(t, rt, newBundle(t), spec)
			if st != 0 {
				t.Fatalf("%s, uid %d, env %v: status %d:\n%s", rt, c.uid, c.env, st, out)
			}
			lines := strings.Fields(out)
			slices.Sort(lines)
			got[rt] = strings.Join(lines, " ")
		}
		if got["tupper"] != got["runc"] {
			t.Errorf("uid %d, env %v: tupper %q, runc %q", c.uid, c.env, got["tupper"], got["runc"])
		}
	}
}

// TestHostileSharedPidNamespace: a container B created into the pid
// namespace of a running container A (a pod's shared one), not started
// yet, is visible to A's processes, here even with CAP_SYS_PTRACE: they
// must find the runtime's binary sealed read-only through B's process
// (CVE-2019-5736), and its root must be B's, not the host's.
func TestHostileSharedPidNamespace(t *testing.T) {
	needRoot(t)
	aSpec := testSpec("sleep", "1000")
	c := aSpec.Process.Capabilities
	if c == nil {
		c = &specs.LinuxCapabilities{}
		aSpec.Process.Capabilities = c
	}
	for _, set := range []*[]string{&c.Bounding, &c.Effective, &c.Permitted} {
		*set = append(*set, "CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE")
	}
	a := started(t, newBundle(t), aSpec)
	script := `for p in /proc/[0-9]*; do
		case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in "tupper-init "*|"runc init"*) ;; *) continue;; esac
		echo "helper $p"
		ls $p/root/
		echo x >> $p/exe && echo WROTE
	done 2>&1`
	for _, rt := range runtimes {
		bundle := newBundle(t)
		os.WriteFile(filepath.Join(bundle, "rootfs/b-root-marker"), nil, 0o644)
		spec := testSpec("sleep", "1000")
		spec.Linux.Namespaces = withNamespacePath(spec.Linux.Namespaces, specs.PIDNamespace, fmt.Sprintf("/proc/%d/ns/pid", a.c.Pid()))
		createOnly(t, rt, bundle, spec)
		out := execWithCaps(t, a.c, c, "sh", "-c", script)
		if !strings.Contains(out, "helper ") || !strings.Contains(out, "b-root-marker") {
			t.Errorf("%s: A does not see B's runtime process in B's root:\n%s", rt, out)
		}
		// Refused because the binary is sealed read-only, not merely
		// because it is busy now (it will not be once B has started).
		if strings.Contains(out, "\nWROTE\n") || !strings.Contains(out, "Read-only file system") {
			t.Errorf("%s: A could write, or may later write, the runtime's binary through B's process:\n%s", rt, out)
		}
	}
}

// execWithCaps runs args in c with capabilities caps and returns the
// output.
func execWithCaps(t *testing.T, c *Container, caps *specs.LinuxCapabilities, args ...string) string {
	t.Helper()
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	p, err := c.Exec(&specs.Process{Args: args, Env: []string{"PATH=/bin"}, Cwd: "/", Capabilities: caps}, Stdio{Stdout: pw, Stderr: pw})
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(pr)
	p.Wait()
	return string(out)
}

// createOnly creates spec in bundle on runtime without starting it; the
// test's cleanup removes it.
func createOnly(t *testing.T, rt, bundle string, spec *specs.Spec) {
	t.Helper()
	if rt == "tupper" {
		if _, err := create(t, bundle, spec); err != nil {
			t.Fatalf("tupper: create: %v", err)
		}
		return
	}
	b, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644)
	root, id := t.TempDir(), fmt.Sprintf("hostile-%d", time.Now().UnixNano())
	// A file, not a pipe: the created container keeps its stdio open.
	log, err := os.Create(filepath.Join(t.TempDir(), "runc.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("runc", "--root", root, "create", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(log.Name())
		t.Fatalf("runc create: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("runc", "--root", root, "delete", "-f", id).Run() })
}

// TestLoopbackUpLikeRunc: lo is up in a container's new network
// namespace, as under runc, whoever else networks it.
func TestLoopbackUpLikeRunc(t *testing.T) {
	needRoot(t)
	for _, rt := range runtimes {
		st, out := runBundle(t, rt, newBundle(t), testSpec("cat", "/sys/class/net/lo/operstate", "/sys/class/net/lo/flags"))
		if st != 0 || !strings.Contains(out, "0x9") { // IFF_UP|IFF_LOOPBACK
			t.Errorf("%s: status %d, lo: %q", rt, st, out)
		}
	}
}

package harness

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tupper/tupper/internal/testutil"
)

// Environment knobs.
const (
	// EnvSnapshotterBin overrides the snapshotter daemon, by default
	// bin/containerd-tupper-snapshotter (make build).
	EnvSnapshotterBin = "TUPPER_BIN"
	// EnvShim overrides tupper's shim, by default
	// bin/containerd-shim-tupper-v2 (make build).
	EnvShim = "TUPPER_SHIM"
	// EnvSnapshotter=btrfs runs Tupper envs on containerd's built-in btrfs
	// snapshotter instead: a check of the tests, not of tupper.
	EnvSnapshotter = "TUPPER_TEST_SNAPSHOTTER"
	// EnvCgroupDriver=systemd runs the suites that read it
	// (SystemdCgroupDriver) with the systemd cgroup driver, as kubeadm
	// sets containerd up; cgroupfs, the default, keeps plain directories.
	EnvCgroupDriver = "TUPPER_TEST_CGROUP_DRIVER"
)

// SystemdCgroupDriver reads EnvCgroupDriver: true for systemd, which
// needs systemd as init (without it the test is skipped loudly, or fails
// under TUPPER_TEST_STRICT); any value but systemd, cgroupfs or none fails
// t. What the driver means is each suite's: Options.SystemdCgroup for
// tupper's runtime, slices as the parents of pods or containers.
func SystemdCgroupDriver(t testing.TB) bool {
	t.Helper()
	switch d := os.Getenv(EnvCgroupDriver); d {
	case "", "cgroupfs":
		return false
	case "systemd":
		if _, err := os.Stat("/run/systemd/system"); err != nil {
			testutil.Require(t, "needs systemd as init for "+EnvCgroupDriver+"=systemd")
		}
		return true
	default:
		t.Fatalf("%s=%q: want cgroupfs or systemd", EnvCgroupDriver, d)
		return false
	}
}

// requireMachine fails (or, outside make test, skips loudly) when the
// machine cannot run an Env with these options.
func requireMachine(t testing.TB, o Options) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	bins := []string{"containerd", "ctr"}
	if o.Snapshotter != Overlayfs {
		if fs, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(fs, []byte("\tbtrfs\n")) {
			missing = append(missing, "btrfs in /proc/filesystems (modprobe btrfs)")
		}
		bins = append(bins, "mkfs.btrfs", "losetup", "btrfs")
	}
	if o.Netns {
		bins = append(bins, "nsenter", "ip")
	}
	for _, bin := range bins {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" on PATH (make deps)")
		}
	}
	if len(missing) > 0 {
		testutil.Require(t, "lacks "+strings.Join(missing, "; "))
	}
}

// RepoRoot is the root of tupper's source tree: the directory above the
// test's working directory that holds tupper's go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/tupper/tupper\n")) {
			return d
		}
		if d == "/" {
			t.Fatalf("no tupper go.mod above %s", dir)
		}
	}
}

// binary is the program env names, or bin/<name> of the repository.
func (e *Env) binary(t testing.TB, env, name string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(e.repo, "bin", name)
	}
	abs, err := filepath.Abs(p)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		t.Fatalf("%s: %v (run `make build`, or set %s)", p, err, env)
	}
	return abs
}

// installShims puts a copy of tupper's shim and of its helper into
// BinDir, first on containerd's PATH, so that this Env's shims are the
// processes running that file; and links runc's shim next to it.
func (e *Env) installShims(t testing.TB) {
	t.Helper()
	if err := os.MkdirAll(e.BinDir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := e.binary(t, EnvShim, "containerd-shim-tupper-v2")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	e.Shim = filepath.Join(e.BinDir, "containerd-shim-tupper-v2")
	if err := os.WriteFile(e.Shim, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// The shim runs its helper from next to itself (make build puts one
	// there); without one, it runs itself as the helper.
	if h, err := os.ReadFile(filepath.Join(filepath.Dir(src), "tupper-helper")); err == nil {
		if err := os.WriteFile(filepath.Join(e.BinDir, "tupper-helper"), h, 0o755); err != nil {
			t.Fatal(err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if p, err := exec.LookPath("containerd-shim-runc-v2"); err == nil {
		if err := os.Symlink(p, filepath.Join(e.BinDir, "containerd-shim-runc-v2")); err != nil {
			t.Fatal(err)
		}
	}
}

// writeRuntimeConfig writes the options file of tupper's runtime: a
// bridge, a free subnet and an address pool of this Env's own.
func (e *Env) writeRuntimeConfig(t testing.TB) {
	t.Helper()
	subnet, err := FreeSubnet()
	if err != nil {
		t.Fatal(err)
	}
	e.Bridge = fmt.Sprintf("tph%08d", rand.IntN(1e8))
	e.Subnet = subnet.String()
	e.RuntimeConfig = filepath.Join(e.Dir, "tupper-runtime.toml")
	toml := fmt.Sprintf("Bridge = %q\nSubnet = %q\nNetworkStateDir = %q\n", e.Bridge, e.Subnet, e.IPAMDir())
	if e.opts.SystemdCgroup {
		toml += "SystemdCgroup = true\n"
	}
	if err := os.WriteFile(e.RuntimeConfig, []byte(toml+e.opts.RuntimeOptions), 0o644); err != nil {
		t.Fatal(err)
	}
}

// IPAMDir is where this Env's tupper network keeps its address allocations.
func (e *Env) IPAMDir() string { return filepath.Join(e.Dir, "net") }

// TupperRuntime is the ctr run flags for tupper's runtime with this Env's
// runtime options (network, cgroup driver).
func (e *Env) TupperRuntime() []string {
	return []string{"--runtime", TupperRuntimeType, "--runtime-config-path", e.RuntimeConfig}
}

// FreeSubnet is a 10.213.x.0/24 (x from 100 to 199) that no address or
// route of this host's network namespace overlaps, starting at a place
// that differs from run to run. A route to a part of a subnet takes the
// subnet (a test's /30 inside it); a wider one (a VPN's 10.0.0.0/8) does
// not, as the subnet's own route is more specific.
func FreeSubnet() (netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Prefix{}, err
	}
	out, _ := exec.Command("ip", "-4", "route", "show").Output()
	routes := routeDestinations(string(out))
	start := rand.IntN(100)
	for i := 0; i < 100; i++ {
		p := netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", 100+(start+i)%100))
		used := slices.ContainsFunc(routes, func(dst netip.Prefix) bool { return within(dst, p) })
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && p.Contains(ip) {
					used = true
				}
			}
		}
		if !used {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free subnet in 10.213.100.0-10.213.199.0")
}

// ShimPids lists the shims of this Env's containerd (tupper's or runc's):
// the processes containerd started with its address.
func (e *Env) ShimPids() []int {
	var pids []int
	for pid := range e.shimArgs() {
		pids = append(pids, pid)
	}
	return pids
}

// ShimsStartedFor lists the shims of this Env's containerd that were
// started for one of the containers ids (their -id: a group's shim has
// its first container's). A test that counts the shims of its own
// containers this way is not misled by an earlier test's shim that is
// still exiting.
func (e *Env) ShimsStartedFor(ids ...string) []int {
	var pids []int
	for pid, args := range e.shimArgs() {
		for i, a := range args {
			if a == "-id" && i+1 < len(args) && slices.Contains(ids, args[i+1]) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// shimArgs returns the command lines of this Env's shims by pid.
func (e *Env) shimArgs() map[int][]string {
	shims := map[int][]string{}
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink("/proc/" + d.Name() + "/exe")
		if err != nil || !strings.HasPrefix(filepath.Base(exe), "containerd-shim-") {
			continue
		}
		b, _ := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		args := strings.Split(string(b), "\x00")
		for _, arg := range args {
			if arg == e.Address {
				shims[pid] = args
				break
			}
		}
	}
	return shims
}

// deleteLink deletes a network link (the Env's bridge) if it exists.
func deleteLink(name string) error {
	if _, err := os.Stat("/sys/class/net/" + name); name == "" || err != nil {
		return nil
	}
	if out, err := exec.Command("ip", "link", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("deleting link %s: %v %s", name, err, out)
	}
	return nil
}

func dialUnix(sock string) error {
	c, err := net.Dial("unix", sock)
	if err == nil {
		c.Close()
	}
	return err
}

// routeDestinations are the destination prefixes in `ip route show`'s
// output; "default" and single addresses are not prefixes and are left out.
func routeDestinations(out string) []netip.Prefix {
	var dsts []netip.Prefix
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			if dst, err := netip.ParsePrefix(f[0]); err == nil {
				dsts = append(dsts, dst)
			}
		}
	}
	return dsts
}

// within reports whether prefix dst lies inside p (or is p).
func within(dst, p netip.Prefix) bool { return dst.Bits() >= p.Bits() && p.Contains(dst.Addr()) }

package network

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tupper/tupper/internal/testutil"
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// testNetwork is a bridge and subnet private to one test; its cleanup
// deletes the bridge.
func testNetwork(t *testing.T, third int) Config {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root for netns, veth and bridges")
	}
	c := DefaultConfig()
	c.Bridge = "tpt" + randHex(4)
	c.Subnet = netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", third))
	c.StateDir = t.TempDir()
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(c.Bridge); err == nil {
			netlink.LinkDel(l)
		}
	})
	return c
}

// newNetns makes a named network namespace (as a container would have) and
// deletes it when the test ends.
func newNetns(t *testing.T) (name, path string) {
	t.Helper()
	name = "tupper-test-" + randHex(4)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name, filepath.Join("/var/run/netns", name)
}

func inNetns(t *testing.T, ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

func TestAttachPingDetach(t *testing.T) {
	c := testNetwork(t, 10)
	ns1, path1 := newNetns(t)
	ns2, path2 := newNetns(t)
	a1, err := Attach(c, "c1", path1)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := Attach(c, "c2", path2)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Subnet.Contains(a1.Addr.Addr()) || a1.Addr.Addr() == a2.Addr.Addr() {
		t.Fatalf("addresses %s and %s", a1.Addr, a2.Addr)
	}

	out, _ := inNetns(t, ns1, "ip", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(out, a1.Addr.String()) {
		t.Fatalf("eth0 in the container lacks %s: %s", a1.Addr, out)
	}
	out, _ = inNetns(t, ns1, "ip", "route", "show", "default")
	if !strings.Contains(out, "via "+a1.Gateway.String()+" dev eth0") {
		t.Fatalf("no default route via the gateway: %q", out)
	}
	out, _ = inNetns(t, ns1, "ip", "-o", "link", "show", "lo")
	if !strings.Contains(out, "UP") && !strings.Contains(out, "LOOPBACK,UP") {
		t.Fatalf("lo is not up: %s", out)
	}
	for _, target := range []netip.Addr{a1.Gateway, a2.Addr.Addr()} {
		if out, err := inNetns(t, ns1, "busybox", "ping", "-c", "1", "-W", "2", target.String()); err != nil {
			t.Fatalf("ping %s from the container: %v\n%s", target, err, out)
		}
	}

	if err := Detach(c, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := Detach(c, "c1"); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	if _, err := netlink.LinkByName(a1.HostVeth); err == nil {
		t.Fatalf("%s still exists after Detach", a1.HostVeth)
	}
	if out, _ := inNetns(t, ns1, "ip", "link", "show", "eth0"); !strings.Contains(out, "does not exist") {
		t.Fatalf("eth0 still in the container after Detach: %s", out)
	}
	ipam, _ := NewIPAM(c.ipamDir(4), c.Subnet)
	all, _ := ipam.Allocations()
	if len(all) != 1 || all[a2.Addr.Addr()] != "c2" {
		t.Fatalf("allocations after detaching c1: %v", all)
	}
	if _, err := netlink.LinkByName(c.Bridge); err != nil {
		t.Fatalf("bridge gone while c2 uses it: %v", err)
	}
	Detach(c, "c2")
	_ = ns2
}

// TestReleaseThenDeleteVeth: Release frees the address at once and leaves
// the veth to the function it returns, which deletes that veth and never
// a later one of the same container id (same name).
func TestReleaseThenDeleteVeth(t *testing.T) {
	c := testNetwork(t, 17)
	_, path1 := newNetns(t)
	a1, err := Attach(c, "r1", path1)
	if err != nil {
		t.Fatal(err)
	}
	deleteVeth, err := Release(c, "r1")
	if err != nil {
		t.Fatal(err)
	}
	ipam, _ := NewIPAM(c.ipamDir(4), c.Subnet)
	if all, _ := ipam.Allocations(); len(all) != 0 {
		t.Fatalf("allocations after Release: %v", all)
	}
	if _, err := netlink.LinkByName(a1.HostVeth); err != nil {
		t.Fatalf("%s gone before its deletion ran: %v", a1.HostVeth, err)
	}
	if err := deleteVeth(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(a1.HostVeth); err == nil {
		t.Fatalf("%s still exists after its deletion ran", a1.HostVeth)
	}

	// The same id again, while an old deletion is still pending.
	_, path2 := newNetns(t)
	if _, err := Attach(c, "r1", path2); err != nil {
		t.Fatal(err)
	}
	stale, err := Release(c, "r1")
	if err != nil {
		t.Fatal(err)
	}
	Detach(c, "r1")
	_, path3 := newNetns(t)
	a3, err := Attach(c, "r1", path3)
	if err != nil {
		t.Fatal(err)
	}
	defer Detach(c, "r1")
	if err := stale(); err != nil {
		t.Fatalf("stale deletion: %v", err)
	}
	if _, err := netlink.LinkByName(a3.HostVeth); err != nil {
		t.Fatalf("a stale deletion removed the newer %s: %v", a3.HostVeth, err)
	}
}

// TestAttachConcurrentFirstUse: containers attached all at once to a
// bridge that does not exist yet all get it; none mistakes the bridge
// another one just made for an overlapping host route.
func TestAttachConcurrentFirstUse(t *testing.T) {
	c := testNetwork(t, 18)
	const n = 40
	paths := make([]string, n)
	for i := range paths {
		_, paths[i] = newNetns(t)
	}
	errs := make(chan error, n)
	for i := range paths {
		go func(i int) {
			_, err := Attach(c, fmt.Sprintf("first%d", i), paths[i])
			errs <- err
		}(i)
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i := 0; i < n; i++ {
		Detach(c, fmt.Sprintf("first%d", i))
	}
}

func TestAttachIPv6(t *testing.T) {
	c := testNetwork(t, 11)
	c.Subnet6 = netip.MustParsePrefix("fd00:7a:" + randHex(2) + "::/64")
	ns, path := newNetns(t)
	a, err := Attach(c, "v6", path)
	if err != nil {
		t.Fatal(err)
	}
	defer Detach(c, "v6")
	if !a.Addr6.IsValid() || !c.Subnet6.Contains(a.Addr6.Addr()) {
		t.Fatalf("no IPv6 address: %+v", a)
	}
	if out, err := inNetns(t, ns, "busybox", "ping", "-6", "-c", "1", "-W", "2", a.Gateway6.String()); err != nil {
		t.Fatalf("ping6 gateway: %v\n%s", err, out)
	}
}

// Errors leave nothing half-made: no veth, no allocation.
func TestAttachErrorsLeaveNothing(t *testing.T) {
	c := testNetwork(t, 12)
	_, path := newNetns(t)

	// A bridge that exists with another address is refused, not changed.
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: c.Bridge}}); err != nil {
		t.Fatal(err)
	}
	br, _ := netlink.LinkByName(c.Bridge)
	other, _ := netlink.ParseAddr("10.213.99.1/24")
	if err := netlink.AddrAdd(br, other); err != nil {
		t.Fatal(err)
	}
	_, err := Attach(c, "x", path)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "10.213.99.1/24") {
		t.Fatalf("bridge with another address: %v", err)
	}
	assertNothingFor(t, c, "x")

	// An exhausted subnet.
	c2 := testNetwork(t, 13)
	c2.Subnet = netip.MustParsePrefix("10.213.13.0/30") // one usable address
	_, path2 := newNetns(t)
	if _, err := Attach(c2, "first", path2); err != nil {
		t.Fatal(err)
	}
	defer Detach(c2, "first")
	_, path3 := newNetns(t)
	if _, err := Attach(c2, "second", path3); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("exhausted subnet: %v", err)
	}
	assertNothingFor(t, c2, "second")

	// A netns path that does not exist.
	if _, err := Attach(c2, "third", "/var/run/netns/does-not-exist-"+randHex(4)); err == nil {
		t.Fatal("attach to a missing netns succeeded")
	}
	assertNothingFor(t, c2, "third")
}

func TestSubnetOverlappingHostRouteRefused(t *testing.T) {
	c := testNetwork(t, 14)
	// A route this test made stands for one of the machine's networks.
	dummy := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "tpd" + randHex(4)}}
	if err := netlink.LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	defer netlink.LinkDel(dummy)
	addr, _ := netlink.ParseAddr("10.213.14.200/25")
	netlink.AddrAdd(dummy, addr)
	netlink.LinkSetUp(dummy)
	_, path := newNetns(t)
	_, err := Attach(c, "o", path)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), dummy.Name) {
		t.Fatalf("overlapping subnet: %v", err)
	}
	if _, err := netlink.LinkByName(c.Bridge); err == nil {
		t.Fatal("bridge created despite the overlap")
	}
	assertNothingFor(t, c, "o")
}

func assertNothingFor(t *testing.T, c Config, id string) {
	t.Helper()
	if _, err := netlink.LinkByName(HostVethName(id)); err == nil {
		t.Errorf("veth of %s left behind", id)
	}
	ipam, _ := NewIPAM(c.ipamDir(4), c.Subnet)
	all, _ := ipam.Allocations()
	for a, owner := range all {
		if owner == id {
			t.Errorf("address %s still allocated to %s", a, id)
		}
	}
}

// routerNetns moves the test's goroutine, locked to its thread, into a new
// network namespace, which plays the host that routes for its containers:
// the test may turn IPv4 forwarding on there, and the bridge, veths and
// NAT rule it makes go with the namespace, never touching the host's. The
// function it returns moves the goroutine back.
func routerNetns(t *testing.T) (back func()) {
	t.Helper()
	runtime.LockOSThread()
	host, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	router, err := netns.New() // unshare(CLONE_NEWNET) on this thread
	if err != nil {
		host.Close()
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	back = func() {
		router.Close()
		if err := netns.Set(host); err != nil {
			// The thread stays locked and dies with the goroutine.
			t.Errorf("back to the host's network namespace: %v", err)
			return
		}
		host.Close()
		runtime.UnlockOSThread()
	}
	if lo, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(lo) != nil {
		back()
		t.Fatalf("lo in the router's namespace: %v", err)
	}
	return back
}

// setForwarding sets net.ipv4.ip_forward of the calling thread's network
// namespace (/proc/sys/net is the opener's namespace).
func setForwarding(t *testing.T, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
}

// upstream makes a network namespace behind a veth from the router's
// namespace, 10.213.16.2 behind 10.213.16.1, with no route back to any
// container subnet; it returns the router's end of the veth.
func upstream(t *testing.T) string {
	t.Helper()
	up, _ := newNetns(t)
	host, peer := "tpu"+randHex(4), "tpupeer"+randHex(2)
	for _, cmd := range [][]string{
		{"ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", up},
		{"ip", "addr", "add", "10.213.16.1/24", "dev", host}, {"ip", "link", "set", host, "up"},
		{"ip", "-n", up, "addr", "add", "10.213.16.2/24", "dev", peer},
		{"ip", "-n", up, "link", "set", peer, "up"}, {"ip", "-n", up, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", cmd, err, out)
		}
	}
	return host
}

// TestNAT: an "upstream" network this test makes (a netns behind a veth,
// with no route back to the containers' subnet) answers a container's ping
// only when its traffic is masqueraded, on that veth and nowhere else. The
// rule goes with the last container. NAT is refused while the (router's)
// namespace does not forward.
func TestNAT(t *testing.T) {
	c := testNetwork(t, 15)
	defer routerNetns(t)()
	host := upstream(t)
	ns, path := newNetns(t)

	// Without NAT the upstream cannot answer: it has no route back.
	setForwarding(t, true)
	if _, err := Attach(c, "plain", path); err != nil {
		t.Fatal(err)
	}
	if out, err := inNetns(t, ns, "busybox", "ping", "-c", "1", "-W", "1", "10.213.16.2"); err == nil {
		t.Fatalf("upstream answered without NAT, so the test proves nothing:\n%s", out)
	}
	Detach(c, "plain")

	c.NAT, c.NATInterface = true, host
	setForwarding(t, false)
	if _, err := Attach(c, "refused", path); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("NAT without forwarding: %v, want a failed precondition", err)
	}
	setForwarding(t, true)
	if _, err := Attach(c, "natted", path); err != nil {
		t.Fatal(err)
	}
	if !NATActive(c) {
		t.Fatal("no NAT rule after attaching a NAT container")
	}
	if out, err := inNetns(t, ns, "busybox", "ping", "-c", "1", "-W", "2", "10.213.16.2"); err != nil {
		t.Fatalf("ping through NAT: %v\n%s", err, out)
	}
	if err := Detach(c, "natted"); err != nil {
		t.Fatal(err)
	}
	if NATActive(c) {
		t.Fatal("the NAT rule outlived the last container")
	}
}

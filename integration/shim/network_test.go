package shim

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/harness"
)

// TestNetwork checks tupper's own networking of ctr containers (issue 4),
// on a bridge and subnet of this test's own. It talks only to addresses
// inside that subnet.
func TestNetwork(t *testing.T) {
	e := newEnv(t)
	runSubtests(t, e, []subtest{
		{"eth0-route-gateway-hosts", testEth0RouteGatewayHosts},
		{"peers-and-host", testPeersAndHost},
		{"published-port", testPublishedPort},
		{"none-mode", testNoneMode},
		{"netns-path-left-alone", testNetnsPathLeftAlone},
		{"fifty-concurrent", testFiftyConcurrent},
		{"bad-options", testBadOptions},
		{"attach-failure-leaves-nothing", testAttachFailureLeavesNothing},
	})
}

func testEth0RouteGatewayHosts(t *testing.T, e *env) {
	subnet := netip.MustParsePrefix(e.Subnet)
	gateway := subnet.Addr().Next()
	out := e.mustCtr(tupperRun("--rm", "--hostname", "box7", image, "n1", "sh", "-c",
		fmt.Sprintf("ip -4 -o addr show eth0; ip route; ping -c 1 -W 2 %s >/dev/null && echo gateway-ok; ip -o link | wc -l; cat /etc/hosts /etc/hostname", gateway))...)
	var addr netip.Prefix
	f := strings.Fields(out)
	for i := range f[:len(f)-1] {
		if f[i] == "inet" {
			addr, _ = netip.ParsePrefix(f[i+1])
			break
		}
	}
	if !addr.IsValid() || !subnet.Contains(addr.Addr()) || addr.Bits() != subnet.Bits() {
		t.Fatalf("eth0 has no address in %s:\n%s", subnet, out)
	}
	for _, want := range []string{"default via " + gateway.String() + " dev eth0", "gateway-ok", addr.Addr().String() + "\tbox7", "box7\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
}

func testPeersAndHost(t *testing.T, e *env) {
	e.mustCtr(tupperRun("-d", image, "web", "sh", "-c", "mkdir -p /www; echo hello-from-tupper > /www/index.html; exec httpd -f -p 80 -h /www")...)
	e.mustCtr(tupperRun("-d", image, "peer", "sleep", "1000")...)
	defer e.stop("web", "peer")
	web := e.addrOf("web")
	if out, err := e.ctr("task", "exec", "--exec-id", "ping", "peer", "ping", "-c", "1", "-W", "2", web.String()); err != nil {
		t.Fatalf("peer cannot ping %s: %v %s", web, err, out)
	}
	// The host reaches the container through the bridge.
	body := httpGetWhenUp(t, "http://"+web.String()+"/", "httpd in the container answers the host")
	if body != "hello-from-tupper\n" {
		t.Fatalf("page from the container: %q", body)
	}
}

func testPublishedPort(t *testing.T, e *env) {
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostAddr := free.Addr().String()
	free.Close()
	e.mustCtr(tupperRun("-d", "--annotation", "io.containerd.tupper.v2.network.publish="+hostAddr+":80", image, "pub",
		"sh", "-c", "mkdir -p /www; echo published > /www/index.html; exec httpd -f -p 80 -h /www")...)
	body := httpGetWhenUp(t, "http://"+hostAddr+"/", "the published port answers")
	if body != "published\n" {
		t.Fatalf("through %s: %q", hostAddr, body)
	}
	e.stop("pub")
	if c, err := net.Dial("tcp", hostAddr); err == nil {
		c.Close()
		t.Fatalf("%s still open after the container was deleted", hostAddr)
	}
	// Publishing without tupper networking is refused.
	out, err := e.ctr(tupperRun("--rm", "--annotation", "io.containerd.tupper.v2.network=none",
		"--annotation", "io.containerd.tupper.v2.network.publish=127.0.0.1:1:80", image, "pub2", "true")...)
	if err == nil || !strings.Contains(out, "needs tupper networking") {
		t.Fatalf("publish with network=none: %v %s", err, out)
	}
}

func testNoneMode(t *testing.T, e *env) {
	out := e.mustCtr(tupperRun("--rm", "--annotation", "io.containerd.tupper.v2.network=none", image, "none1", "sh", "-c", "ip -o link | cut -d: -f2")...)
	if strings.TrimSpace(out) != "lo" {
		t.Fatalf("network=none: links %q, want only lo", out)
	}
}

func testNetnsPathLeftAlone(t *testing.T, e *env) {
	e.mustCtr(tupperRun("-d", image, "owner", "sleep", "1000")...)
	defer e.stop("owner")
	before := len(e.allocations())
	ownerLinks := e.mustCtr("task", "exec", "--exec-id", "links", "owner", "sh", "-c", "ip -o link | cut -d: -f2")
	out := e.mustCtr(tupperRun("--rm", "--with-ns", fmt.Sprintf("network:/proc/%d/ns/net", e.taskPid("owner")), image, "joiner", "sh", "-c", "ip -o link | cut -d: -f2")...)
	if out != ownerLinks {
		t.Fatalf("the joiner sees links %q, the namespace has %q", out, ownerLinks)
	}
	if after := len(e.allocations()); after != before {
		t.Fatalf("a container given a netns path got an address (%d -> %d allocations)", before, after)
	}
}

func testFiftyConcurrent(t *testing.T, e *env) {
	const n = 50
	ids := e.startMany(t, "many", n)
	defer func() {
		e.stop(ids...)
		if a := e.allocations(); len(a) != 0 {
			t.Errorf("allocations left after deleting all: %v", a)
		}
		// Each shim deletes its veth after Delete has replied, and
		// exits once it has.
		if !eventually(func() bool { return len(e.veths()) == 0 }) {
			t.Errorf("veths left on %s: %v", e.Bridge, e.veths())
		}
	}()
	seen := map[netip.Addr]string{}
	for _, id := range ids {
		a := e.addrOf(id)
		if other, dup := seen[a]; dup {
			t.Fatalf("%s and %s both have %s", id, other, a)
		}
		seen[a] = id
	}
	if a, v := e.allocations(), e.veths(); len(a) != n || len(v) != n {
		t.Fatalf("%d allocations and %d veths for %d containers", len(a), len(v), n)
	}
}

func testBadOptions(t *testing.T, e *env) {
	bad := filepath.Join(e.Dir, "bad-runtime.toml")
	os.WriteFile(bad, []byte("Brigde = \"x\"\n"), 0o644)
	out, err := e.ctr("run", "--runtime-config-path", bad, "--runtime", "io.containerd.tupper.v2", "--rm", image, "bad1", "true")
	if err == nil || !strings.Contains(out, `"Brigde"`) {
		t.Fatalf("unknown runtime option: %v %s", err, out)
	}
	out, err = e.ctr(tupperRun("--rm", "--annotation", "io.containerd.tupper.v2.network.subnet=10.0.0.0/33", image, "bad2", "true")...)
	if err == nil || !strings.Contains(out, "10.0.0.0/33") {
		t.Fatalf("bad subnet annotation: %v %s", err, out)
	}
	if a := e.allocations(); len(a) != 0 {
		t.Fatalf("refused containers left allocations: %v", a)
	}
}

// testAttachFailureLeavesNothing gives containers a bridge of the test's
// own with room for one address: the second container's network attach
// fails for want of an address during its Create, while its init helper
// builds the container. The Create must fail naming the bridge and leave
// no shim, helper, mount, allocation or veth of that container behind.
func testAttachFailureLeavesNothing(t *testing.T, e *env) {
	free, err := harness.FreeSubnet()
	if err != nil {
		t.Fatal(err)
	}
	br := fmt.Sprintf("tpf%08d", rand.IntN(1e8))
	t.Cleanup(func() { exec.Command("ip", "link", "del", br).Run() })
	ann := []string{
		"--annotation", "io.containerd.tupper.v2.network.bridge=" + br,
		// .1 is the gateway, .2 the only address left for a container.
		"--annotation", "io.containerd.tupper.v2.network.subnet=" + netip.PrefixFrom(free.Addr(), 30).String(),
	}
	e.mustCtr(tupperRun(append(ann, "-d", image, "af1", "sleep", "1000")...)...)
	defer e.stop("af1")
	out, err := e.ctr(tupperRun(append(ann, "--rm", image, "af2", "true")...)...)
	if err == nil || !strings.Contains(out, br) {
		t.Fatalf("a container with no address left: %v %s", err, out)
	}
	if ms := e.stateMounts(); len(ms) != 1 {
		t.Errorf("mounts after the failed create: %v, want af1's only", ms)
	}
	if !eventually(func() bool { return len(e.ShimsStartedFor("af2")) == 0 && len(helpersOf("af2")) == 0 }) {
		t.Errorf("af2's shim %v or init helper %v is left", e.ShimsStartedFor("af2"), helpersOf("af2"))
	}
	if v := vethsOn(br); len(v) != 1 {
		t.Errorf("veths on %s: %v, want af1's only", br, v)
	}
	if a := e.allocationsOn(br); len(a) != 1 {
		t.Errorf("allocations on %s: %v, want af1's only", br, a)
	}
}

// helpersOf lists the processes that are still container id's init helper
// (tupper-init, not yet its program).
func helpersOf(id string) []string {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []string
	for _, f := range cmdlines {
		if b, _ := os.ReadFile(f); string(b) == "tupper-init\x00"+id+"\x00" {
			pids = append(pids, filepath.Base(filepath.Dir(f)))
		}
	}
	return pids
}

// tupperRun is ctr run with the tupper runtime.
func tupperRun(args ...string) []string {
	return append([]string{"run", "--runtime", harness.TupperRuntimeType}, args...)
}

// addrOf is the IPv4 address of a running container's eth0.
func (e *env) addrOf(id string) netip.Addr {
	e.t.Helper()
	out := e.mustCtr("task", "exec", "--exec-id", "addr-"+id, id, "ip", "-4", "-o", "addr", "show", "eth0")
	f := strings.Fields(out)
	for i, w := range f {
		if w == "inet" && i+1 < len(f) {
			if p, err := netip.ParsePrefix(f[i+1]); err == nil {
				return p.Addr()
			}
		}
	}
	e.t.Fatalf("no IPv4 address on eth0 of %s: %q", id, out)
	return netip.Addr{}
}

// stop removes containers, also those whose task was never created.
func (e *env) stop(ids ...string) {
	e.t.Helper()
	var tasks []string
	for _, id := range ids {
		if _, err := e.ctr("task", "kill", "-s", "KILL", id); err == nil {
			tasks = append(tasks, id)
		}
	}
	for _, id := range tasks {
		e.waitStopped(id)
		e.mustCtr("task", "delete", id)
	}
	for _, id := range ids {
		e.ctr("containers", "rm", id)
	}
}

// httpGetWhenUp waits (waitFor) until url answers and returns the body.
func httpGetWhenUp(t *testing.T, url, what string) string {
	t.Helper()
	var body string
	waitFor(t, func() bool {
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return true
	}, what)
	return body
}

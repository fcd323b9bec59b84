package shim

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestNetwork checks tupper's own networking of ctr containers (issue 4),
// on a bridge and subnet of this test's own. It talks only to addresses
// inside that subnet.
func TestNetwork(t *testing.T) {
	e := newEnv(t)
	subnet := netip.MustParsePrefix(e.subnet)
	gateway := subnet.Addr().Next()
	tupper := func(args ...string) []string {
		return append([]string{"run", "--runtime", "io.containerd.tupper.v2"}, args...)
	}
	addrOf := func(id string) netip.Addr {
		t.Helper()
		out := e.mustCtr("task", "exec", "--exec-id", "addr-"+id, id, "ip", "-4", "-o", "addr", "show", "eth0")
		f := strings.Fields(out)
		for i, w := range f {
			if w == "inet" && i+1 < len(f) {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil {
					return p.Addr()
				}
			}
		}
		t.Fatalf("no IPv4 address on eth0 of %s: %q", id, out)
		return netip.Addr{}
	}
	allocations := func() []string {
		entries, _ := os.ReadDir(filepath.Join(e.dir, "net", e.bridge, "ipv4"))
		var out []string
		for _, en := range entries {
			if _, err := netip.ParseAddr(en.Name()); err == nil {
				out = append(out, en.Name())
			}
		}
		return out
	}
	veths := func() []string {
		out, _ := runCmd("ip", "-o", "link", "show", "master", e.bridge)
		var names []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(l); len(f) > 1 {
				names = append(names, strings.Split(strings.TrimSuffix(f[1], ":"), "@")[0])
			}
		}
		return names
	}
	// stop removes containers, also those whose task was never created.
	stop := func(ids ...string) {
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

	t.Run("eth0-route-gateway-hosts", func(t *testing.T) {
		e.t = t
		out := e.mustCtr(tupper("--rm", "--hostname", "box7", image, "n1", "sh", "-c",
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
	})

	t.Run("peers-and-host", func(t *testing.T) {
		e.t = t
		e.mustCtr(tupper("-d", image, "web", "sh", "-c", "mkdir -p /www; echo hello-from-tupper > /www/index.html; exec httpd -f -p 80 -h /www")...)
		e.mustCtr(tupper("-d", image, "peer", "sleep", "1000")...)
		defer stop("web", "peer")
		web := addrOf("web")
		if out, err := e.ctr("task", "exec", "--exec-id", "ping", "peer", "ping", "-c", "1", "-W", "2", web.String()); err != nil {
			t.Fatalf("peer cannot ping %s: %v %s", web, err, out)
		}
		// The host reaches the container through the bridge.
		body := httpGetWhenUp(t, "http://"+web.String()+"/", "httpd in the container answers the host")
		if body != "hello-from-tupper\n" {
			t.Fatalf("page from the container: %q", body)
		}
	})

	t.Run("published-port", func(t *testing.T) {
		e.t = t
		free, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hostAddr := free.Addr().String()
		free.Close()
		e.mustCtr(tupper("-d", "--annotation", "io.containerd.tupper.v2.network.publish="+hostAddr+":80", image, "pub",
			"sh", "-c", "mkdir -p /www; echo published > /www/index.html; exec httpd -f -p 80 -h /www")...)
		body := httpGetWhenUp(t, "http://"+hostAddr+"/", "the published port answers")
		if body != "published\n" {
			t.Fatalf("through %s: %q", hostAddr, body)
		}
		stop("pub")
		if c, err := net.Dial("tcp", hostAddr); err == nil {
			c.Close()
			t.Fatalf("%s still open after the container was deleted", hostAddr)
		}
		// Publishing without tupper networking is refused.
		out, err := e.ctr(tupper("--rm", "--annotation", "io.containerd.tupper.v2.network=none",
			"--annotation", "io.containerd.tupper.v2.network.publish=127.0.0.1:1:80", image, "pub2", "true")...)
		if err == nil || !strings.Contains(out, "needs tupper networking") {
			t.Fatalf("publish with network=none: %v %s", err, out)
		}
	})

	t.Run("none-mode", func(t *testing.T) {
		e.t = t
		out := e.mustCtr(tupper("--rm", "--annotation", "io.containerd.tupper.v2.network=none", image, "none1", "sh", "-c", "ip -o link | cut -d: -f2")...)
		if strings.TrimSpace(out) != "lo" {
			t.Fatalf("network=none: links %q, want only lo", out)
		}
	})

	t.Run("netns-path-left-alone", func(t *testing.T) {
		e.t = t
		e.mustCtr(tupper("-d", image, "owner", "sleep", "1000")...)
		defer stop("owner")
		before := len(allocations())
		ownerLinks := e.mustCtr("task", "exec", "--exec-id", "links", "owner", "sh", "-c", "ip -o link | cut -d: -f2")
		out := e.mustCtr(tupper("--rm", "--with-ns", fmt.Sprintf("network:/proc/%d/ns/net", e.taskPid("owner")), image, "joiner", "sh", "-c", "ip -o link | cut -d: -f2")...)
		if out != ownerLinks {
			t.Fatalf("the joiner sees links %q, the namespace has %q", out, ownerLinks)
		}
		if after := len(allocations()); after != before {
			t.Fatalf("a container given a netns path got an address (%d -> %d allocations)", before, after)
		}
	})

	t.Run("fifty-concurrent", func(t *testing.T) {
		e.t = t
		const n = 50
		ids := make([]string, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("many%d", i)
			wg.Add(1)
			go func(id string) {
				defer wg.Done()
				if out, err := e.ctr(tupper("-d", image, id, "sleep", "1000")...); err != nil {
					errs <- fmt.Errorf("%s: %v %s", id, err, out)
				}
			}(ids[i])
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		defer func() {
			stop(ids...)
			if a := allocations(); len(a) != 0 {
				t.Errorf("allocations left after deleting all: %v", a)
			}
			// Each shim deletes its veth after Delete has replied, and
			// exits once it has.
			for deadline := time.Now().Add(10 * time.Second); len(veths()) != 0 && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
			if v := veths(); len(v) != 0 {
				t.Errorf("veths left on %s: %v", e.bridge, v)
			}
		}()
		seen := map[netip.Addr]string{}
		for _, id := range ids {
			a := addrOf(id)
			if other, dup := seen[a]; dup {
				t.Fatalf("%s and %s both have %s", id, other, a)
			}
			seen[a] = id
		}
		if a, v := allocations(), veths(); len(a) != n || len(v) != n {
			t.Fatalf("%d allocations and %d veths for %d containers", len(a), len(v), n)
		}
	})

	t.Run("bad-options", func(t *testing.T) {
		e.t = t
		bad := filepath.Join(e.dir, "bad-runtime.toml")
		os.WriteFile(bad, []byte("Brigde = \"x\"\n"), 0o644)
		out, err := e.ctr("run", "--runtime-config-path", bad, "--runtime", "io.containerd.tupper.v2", "--rm", image, "bad1", "true")
		if err == nil || !strings.Contains(out, `"Brigde"`) {
			t.Fatalf("unknown runtime option: %v %s", err, out)
		}
		out, err = e.ctr(tupper("--rm", "--annotation", "io.containerd.tupper.v2.network.subnet=10.0.0.0/33", image, "bad2", "true")...)
		if err == nil || !strings.Contains(out, "10.0.0.0/33") {
			t.Fatalf("bad subnet annotation: %v %s", err, out)
		}
		if a := allocations(); len(a) != 0 {
			t.Fatalf("refused containers left allocations: %v", a)
		}
	})
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
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

package network

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParsePublish(t *testing.T) {
	ports, err := ParsePublish("8080:80, 127.0.0.1:8443:443/tcp")
	if err != nil || len(ports) != 2 {
		t.Fatalf("%v %v", ports, err)
	}
	if ports[0].HostIP != netip.IPv4Unspecified() || ports[0].HostPort != 8080 || ports[0].ContainerPort != 80 ||
		ports[1].HostIP != netip.MustParseAddr("127.0.0.1") || ports[1].HostPort != 8443 || ports[1].ContainerPort != 443 {
		t.Fatalf("parsed %+v", ports)
	}
	for _, bad := range []string{"80", "8080:80/udp", "x:80", "0:80", "70000:80", "a.b:1:2", "1:2:3:4"} {
		if _, err := ParsePublish(bad); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// The proxy forwards both ways, passes a half-close on, and stops
// listening when closed.
func TestPublishForwards(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(c) // until the client's half-close
			c.Write([]byte("echo:" + string(b)))
			c.Close()
		}
	}()
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	hostPort := free.Addr().(*net.TCPAddr).Port
	free.Close()
	be := backend.Addr().(*net.TCPAddr)
	p, err := Publish(context.Background(), netip.MustParseAddr("127.0.0.1"), []Port{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: uint16(hostPort), ContainerPort: uint16(be.Port)}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", free.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "echo:ping" {
		t.Fatalf("through the proxy: %q", got)
	}
	p.Close()
	if c, err := net.Dial("tcp", free.Addr().String()); err == nil {
		c.Close()
		t.Fatal("still listening after Close")
	}
}

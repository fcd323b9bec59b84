package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// AnnotationPublish publishes container ports on the host:
// "[hostIP:]hostPort:containerPort[/tcp],..." (hostIP defaults to 0.0.0.0).
// Off unless asked for.
const AnnotationPublish = "io.containerd.tupper.v2.network.publish"

// Port is one published port.
type Port struct {
	HostIP        netip.Addr
	HostPort      uint16
	ContainerPort uint16
}

func (p Port) String() string {
	return fmt.Sprintf("%s->%d/tcp", netip.AddrPortFrom(p.HostIP, p.HostPort), p.ContainerPort)
}

// ParsePublish reads AnnotationPublish.
func ParsePublish(v string) ([]Port, error) {
	var out []Port
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		bad := func(why string) ([]Port, error) {
			return nil, fmt.Errorf("annotation %s: %q: %s (want [hostIP:]hostPort:containerPort[/tcp]): %w", AnnotationPublish, item, why, errdefs.ErrInvalidArgument)
		}
		spec, proto, hasProto := strings.Cut(item, "/")
		if hasProto && proto != "tcp" {
			return bad("only tcp is supported")
		}
		parts := strings.Split(spec, ":")
		p := Port{HostIP: netip.IPv4Unspecified()}
		switch len(parts) {
		case 2:
		case 3:
			ip, err := netip.ParseAddr(parts[0])
			if err != nil {
				return bad("bad host address")
			}
			p.HostIP, parts = ip, parts[1:]
		default:
			return bad("wrong number of fields")
		}
		for i, dst := range []*uint16{&p.HostPort, &p.ContainerPort} {
			n, err := strconv.ParseUint(parts[i], 10, 16)
			if err != nil || n == 0 {
				return bad("bad port " + strconv.Quote(parts[i]))
			}
			*dst = uint16(n)
		}
		out = append(out, p)
	}
	return out, nil
}

// Publisher forwards host ports to one container for as long as it runs:
// a userland TCP proxy in the shim, so publishing needs no firewall rules
// and ends with the container (or with the shim, should it die).
type Publisher struct {
	listeners []net.Listener
	wg        sync.WaitGroup
}

// Publish listens on every port and forwards to the container's address.
// If one port cannot be bound, none stays open.
func Publish(ctx context.Context, container netip.Addr, ports []Port) (*Publisher, error) {
	p := &Publisher{}
	for _, port := range ports {
		l, err := net.Listen("tcp", netip.AddrPortFrom(port.HostIP, port.HostPort).String())
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("publishing %s: %w", port, err)
		}
		p.listeners = append(p.listeners, l)
		target := netip.AddrPortFrom(container, port.ContainerPort).String()
		p.wg.Add(1)
		go p.serve(ctx, l, target)
	}
	return p, nil
}

func (p *Publisher) serve(ctx context.Context, l net.Listener, target string) {
	defer p.wg.Done()
	for {
		conn, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.G(ctx).WithError(err).Warn("published port stopped accepting")
			}
			return
		}
		go forward(conn, target)
	}
}

func forward(client net.Conn, target string) {
	defer client.Close()
	server, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer server.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite() // pass the half-close on
		}
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	<-done
}

// Close stops listening on every published port.
func (p *Publisher) Close() {
	if p == nil {
		return
	}
	for _, l := range p.listeners {
		l.Close()
	}
	p.wg.Wait()
}

package task

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
)

// joinShim is a task service with no containers, serving only Join on a
// socket of its own; it returns the service, the socket's address and the
// shim's shutdown service.
func joinShim(t *testing.T) (*service, string, shutdown.Service) {
	t.Helper()
	_, sd := shutdown.WithShutdown(context.Background())
	t.Cleanup(sd.Shutdown)
	s := &service{shutdown: sd, containers: map[string]*Container{}, creating: map[string]bool{}, joining: map[string]*time.Timer{}}
	server, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	s.registerJoin(server)
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go server.Serve(context.Background(), ln)
	t.Cleanup(func() { server.Close() })
	return s, "unix://" + path, sd
}

// stopped waits for the shim to stop (pkg/shutdown runs its callbacks
// asynchronously), for a bounded time.
func stopped(sd shutdown.Service) bool {
	select {
	case <-sd.Done():
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

// A joined container keeps the shim up through a Shutdown until its Create
// has come and gone; a stopping shim refuses joins.
func TestJoinKeepsShimForCreate(t *testing.T) {
	s, addr, sd := joinShim(t)
	ctx := context.Background()
	if err := Join(ctx, addr, "c2"); err != nil {
		t.Fatal(err)
	}
	if s.stopIfIdle() || s.stopping {
		t.Fatal("the shim decided to stop with a join pending")
	}
	done, err := s.reserve("c2") // Create's claim ends the join
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.joining); n != 0 {
		t.Fatalf("%d joins left after the Create's claim", n)
	}
	done() // the Create failed: nothing left to serve
	if !s.stopIfIdle() || !stopped(sd) {
		t.Fatal("an idle shim did not stop")
	}
	if err := Join(ctx, addr, "c3"); !errdefs.IsUnavailable(err) {
		t.Fatalf("join of a stopping shim: %v, want Unavailable", err)
	}
	if err := Join(ctx, addr, ""); !errdefs.IsInvalidArgument(err) && !errdefs.IsUnavailable(err) {
		t.Fatalf("join without an id: %v", err)
	}
}

// A join whose Create never comes stops an otherwise idle shim when it
// expires.
func TestJoinExpires(t *testing.T) {
	defer func(d time.Duration) { joinTimeout = d }(joinTimeout)
	joinTimeout = 10 * time.Millisecond
	_, addr, sd := joinShim(t)
	if err := Join(context.Background(), addr, "c2"); err != nil {
		t.Fatal(err)
	}
	if !stopped(sd) {
		t.Fatal("the shim is still up 10 s after its only join expired")
	}
}

// A shim without the group service (one from before joins) answers
// NotImplemented, which start takes as "share it".
func TestJoinUnknownService(t *testing.T) {
	server, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go server.Serve(context.Background(), ln)
	defer server.Close()
	if err := Join(context.Background(), "unix://"+path, "c1"); !errdefs.IsNotImplemented(err) && !errdefs.IsNotFound(err) {
		t.Fatalf("join of a shim without the group service: %v, want NotImplemented", err)
	}
}

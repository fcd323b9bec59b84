package serve

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/emptypb"
)

// eventsServer stands in for containerd's ttrpc events service.
type eventsServer struct {
	got chan *eventsapi.ForwardRequest
}

func (s *eventsServer) Forward(ctx context.Context, r *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	s.got <- r
	return &emptypb.Empty{}, nil
}

// serveEvents serves an eventsServer at path until the test ends.
func serveEvents(t *testing.T, path string) *eventsServer {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	es := &eventsServer{got: make(chan *eventsapi.ForwardRequest, 8)}
	eventsapi.RegisterTTRPCEventsService(srv, es)
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() { srv.Close() })
	return es
}

func receive(t *testing.T, es *eventsServer, within time.Duration) *eventsapi.ForwardRequest {
	t.Helper()
	select {
	case r := <-es.got:
		return r
	case <-time.After(within):
		t.Fatalf("no event within %v", within)
		return nil
	}
}

func checkExit(t *testing.T, r *eventsapi.ForwardRequest) {
	t.Helper()
	env := r.GetEnvelope()
	if env.GetNamespace() != "ns1" || env.GetTopic() != "/tasks/exit" {
		t.Errorf("envelope %v", env)
	}
	v, err := typeurl.UnmarshalAny(env.GetEvent())
	if e, ok := v.(*eventstypes.TaskExit); err != nil || !ok || e.ContainerID != "c1" || e.ExitStatus != 3 {
		t.Errorf("event %v (%v)", v, err)
	}
}

func TestPublisherForwards(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ttrpc.sock")
	es := serveEvents(t, path)
	p, err := NewPublisher(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := namespaces.WithNamespace(context.Background(), "ns1")
	if err := p.Publish(ctx, "/tasks/exit", &eventstypes.TaskExit{ContainerID: "c1", ExitStatus: 3}); err != nil {
		t.Fatal(err)
	}
	checkExit(t, receive(t, es, 5*time.Second))
	if err := p.Publish(context.Background(), "/tasks/exit", &eventstypes.TaskExit{}); err == nil {
		t.Error("published an event without a namespace")
	}
}

// An event containerd could not take (it is restarting) goes out once it
// is back: a task's exit must not be lost.
func TestPublisherRetriesUntilContainerdIsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ttrpc.sock")
	p, err := NewPublisher(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := namespaces.WithNamespace(context.Background(), "ns1")
	if err := p.Publish(ctx, "/tasks/exit", &eventstypes.TaskExit{ContainerID: "c1", ExitStatus: 3}); err == nil {
		t.Fatal("Publish with no containerd listening succeeded")
	}
	es := serveEvents(t, path)
	// Publish waited up to 5 s for the socket (containerd's dialer); the
	// first retry is 1 s after that failure, the next 2 s later.
	checkExit(t, receive(t, es, 30*time.Second))
}

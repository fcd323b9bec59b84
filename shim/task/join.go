package task

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/tupper/tupper/shim/serve"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A shim that serves a group of containers (a pod, a group annotation, or
// with ShimGrouping "namespace" a whole namespace) is found through its
// socket: `shim start` of a later container sees the socket answer and
// gives containerd its address. Between that answer and the container's
// Create, containerd may delete the group's last other container and call
// Shutdown; a shim that exited then would leave the Create with nobody at
// the address. Join closes that window: start asks the running shim to
// wait for the container, the shim counts the pending join as a container
// until its Create arrives or joinTimeout passes, and once it has decided
// to stop it refuses the join (Unavailable) so that start makes a new shim.

// joinService and joinMethod name the one RPC of the group service, which
// the shim serves beside containerd's task service on the same socket.
const (
	joinService = "tupper.shim.v1.Group"
	joinMethod  = "Join"
)

// joinTimeout bounds how long a join keeps an otherwise idle shim up when
// the Create never comes (containerd gave up or died in between).
var joinTimeout = time.Minute

// Join asks the shim at address to expect container id's Create. An
// Unavailable error means that shim is stopping; a NotImplemented one,
// that it predates joins.
func Join(ctx context.Context, address, id string) error {
	conn, err := serve.Dial(address, 5*time.Second)
	if err != nil {
		return fmt.Errorf("connect to the group's shim: %w", err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	err = client.Call(ctx, joinService, joinMethod, wrapperspb.String(id), &emptypb.Empty{})
	return errgrpc.ToNative(err)
}

// registerJoin serves Join on server.
func (s *service) registerJoin(server *ttrpc.Server) {
	server.RegisterService(joinService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		joinMethod: func(_ context.Context, unmarshal func(any) error) (any, error) {
			var id wrapperspb.StringValue
			if err := unmarshal(&id); err != nil {
				return nil, err
			}
			if err := s.join(id.GetValue()); err != nil {
				return nil, errgrpc.ToGRPC(err)
			}
			return &emptypb.Empty{}, nil
		},
	}})
}

// join records that container id's Create is on its way.
func (s *service) join(id string) error {
	if id == "" {
		return fmt.Errorf("join without a container id: %w", errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return fmt.Errorf("the group's shim is shutting down: %w", errdefs.ErrUnavailable)
	}
	if t := s.joining[id]; t != nil {
		t.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(joinTimeout, func() {
		s.mu.Lock()
		if s.joining[id] == t {
			delete(s.joining, id)
		}
		s.mu.Unlock()
		s.stopIfIdle()
	})
	s.joining[id] = t
	return nil
}

// joinedLocked ends the wait for id's Create; s.mu is held.
func (s *service) joinedLocked(id string) {
	if t := s.joining[id]; t != nil {
		t.Stop()
		delete(s.joining, id)
	}
}

// stopIfIdle stops the shim when it serves no container, none is being
// created and none is expected; it reports whether it did. The socket goes
// first, under the lock, so that no later start finds this shim.
func (s *service) stopIfIdle() bool {
	s.mu.Lock()
	if len(s.containers)+len(s.creating)+len(s.joining) > 0 || s.stopping {
		s.mu.Unlock()
		return false
	}
	s.stopAcceptingLocked()
	s.mu.Unlock()
	s.shutdown.Shutdown()
	return true
}

// stopAcceptingLocked makes the shim refuse joins and frees its socket, so
// that no later start finds it; s.mu is held.
func (s *service) stopAcceptingLocked() {
	s.stopping = true
	s.socket.Remove()
}

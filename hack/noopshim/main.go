// noopshim is a runtime v2 shim that runs nothing, for `make bench`: it
// speaks containerd's shim protocol with tupper's plumbing (shim/manager's
// `start`, shim/serve's daemon, shim/nsenter's `shim delete` fast path)
// but its task exits with status 0 as soon as it is started, with no
// process, namespace, mount or cgroup behind it. `ctr run --rm` through it
// times what ctr and containerd spend on a container whatever the runtime
// does: the floor under every runtime's start latency row.
//
// It is a benchmark reference, not a runtime: never configure it in a
// containerd that runs real workloads.
package main

import (
	"context"
	"os"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"github.com/tupper/tupper/shim/bundle"
	"github.com/tupper/tupper/shim/manager"
	"github.com/tupper/tupper/shim/serve"
	"github.com/tupper/tupper/version"
	"google.golang.org/protobuf/proto"

	// `shim delete` answers from the bundle without starting Go.
	_ "github.com/tupper/tupper/shim/nsenter"
)

func main() {
	serve.Main(manager.New("io.containerd.tupper-noop.v2"), version.Version, newService)
}

// task is one container of the shim: created, then exited at Start.
type task struct {
	bundle   string
	exited   chan struct{}
	exitedAt time.Time
}

type service struct {
	pub    serve.Publisher
	sd     shutdown.Service
	socket *serve.ListenSocket

	mu    sync.Mutex
	tasks map[string]*task
}

func newService(ctx context.Context, pub serve.Publisher, sd shutdown.Service) (serve.Service, error) {
	return &service{pub: pub, sd: sd, socket: serve.OwnSocket(), tasks: map[string]*task{}}, nil
}

func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	return nil
}

// pid stands for the task's process in every reply: the shim's own, so
// that a caller that looks at it finds a live process.
var pid = uint32(os.Getpid())

func (s *service) get(id string) (*task, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	if !ok {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "task %s", id)
	}
	return t, nil
}

func (s *service) publish(e any) {
	_ = s.pub.Publish(context.Background(), runtime.GetTopic(e), e)
}

func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	s.mu.Lock()
	s.tasks[r.ID] = &task{bundle: r.Bundle, exited: make(chan struct{})}
	s.mu.Unlock()
	s.publish(&eventstypes.TaskCreate{ContainerID: r.ID, Bundle: r.Bundle, Pid: pid})
	return &taskAPI.CreateTaskResponse{Pid: pid}, nil
}

// Start reports the task started and, at once, exited with status 0.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	select {
	case <-t.exited:
	default:
		t.exitedAt = time.Now()
		close(t.exited)
	}
	s.mu.Unlock()
	s.publish(&eventstypes.TaskStart{ContainerID: r.ID, Pid: pid})
	s.publish(&eventstypes.TaskExit{ContainerID: r.ID, ID: r.ID, Pid: pid, ExitedAt: protobuf.ToTimestamp(t.exitedAt)})
	return &taskAPI.StartResponse{Pid: pid}, nil
}

func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	select {
	case <-t.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &taskAPI.WaitResponse{ExitedAt: protobuf.ToTimestamp(t.exitedAt)}, nil
}

// Delete forgets the task and leaves its reply in the bundle, as tupper's
// shim does, for `shim delete`'s fast path.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	delete(s.tasks, r.ID)
	s.mu.Unlock()
	resp := &taskAPI.DeleteResponse{Pid: pid, ExitedAt: protobuf.ToTimestamp(t.exitedAt)}
	if b, err := proto.Marshal(resp); err == nil {
		_ = bundle.WriteExit(t.bundle, bundle.Exit{Pid: int(pid), ExitedAt: t.exitedAt})
		_ = bundle.MarkCleanedUp(t.bundle, b)
	}
	s.publish(&eventstypes.TaskDelete{ContainerID: r.ID, ID: r.ID, Pid: pid, ExitedAt: resp.ExitedAt})
	return resp, nil
}

func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	st := &taskAPI.StateResponse{ID: r.ID, Bundle: t.bundle, Pid: pid}
	select {
	case <-t.exited:
		st.Status, st.ExitedAt = 3, protobuf.ToTimestamp(t.exitedAt) // STOPPED
	default:
		st.Status = 1 // CREATED
	}
	return st, nil
}

func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return &taskAPI.ConnectResponse{ShimPid: pid, TaskPid: pid}, nil
}

func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	if _, err := s.get(r.ID); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	return &ptypes.Empty{}, nil
}

func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	return &ptypes.Empty{}, nil
}

// Shutdown stops the shim once it has no task left, its socket file gone
// first, as tupper's shim does.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tasks) == 0 {
		s.socket.Remove()
		s.sd.Shutdown()
	}
	return &ptypes.Empty{}, nil
}

func notImplemented(what string) error {
	return errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "%s: the no-op runtime runs nothing", what)
}

func (s *service) Pids(context.Context, *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return nil, notImplemented("pids")
}

func (s *service) Pause(context.Context, *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return nil, notImplemented("pause")
}

func (s *service) Resume(context.Context, *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return nil, notImplemented("resume")
}

func (s *service) Checkpoint(context.Context, *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, notImplemented("checkpoint")
}

func (s *service) Exec(context.Context, *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	return nil, notImplemented("exec")
}

func (s *service) Update(context.Context, *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return nil, notImplemented("update")
}

func (s *service) Stats(context.Context, *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return nil, notImplemented("stats")
}

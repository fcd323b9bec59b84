// Package task implements the containerd task API (v3) on top of the
// container package. Each RPC group lives in its own file.
package task

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/process"
	"github.com/tupper/tupper/shim/seccomp"
	"github.com/tupper/tupper/shim/serve"
	"golang.org/x/sys/unix"
)

var _ Service = (*service)(nil)

// Service is the shim daemon's API: the task API and the group join.
type Service interface {
	taskAPI.TaskService
	RegisterTTRPC(*ttrpc.Server) error
}

// Publisher sends events to containerd.
type Publisher = serve.Publisher

type service struct {
	ctx       context.Context
	publisher Publisher
	shutdown  shutdown.Service
	events    *eventQueue

	mu         sync.Mutex
	containers map[string]*Container
	creating   map[string]bool
	joining    map[string]*time.Timer // starts waiting for their Create (join.go)
	stopping   bool                   // Shutdown decided to stop: no more joins

	// background is cleanup that Delete left running (veth deletion);
	// the shim waits for it before it exits. Once shuttingDown (under
	// mu), Delete cleans up in line instead.
	background   sync.WaitGroup
	shuttingDown bool

	socket *serve.ListenSocket // removed when Shutdown decides to stop

	// seccomp compiles each seccomp profile once for every shim on the
	// host; libseccomp takes tens of milliseconds over containerd's
	// default profile.
	seccomp *seccomp.Cache
}

// backgroundWait bounds how long shutdown waits for background cleanup:
// the daemon exits when its shutdown callbacks return, and a stuck veth
// deletion must not keep a finished shim around.
const backgroundWait = 4 * time.Second

// inBackground runs fn after the reply (see background).
func (s *service) inBackground(fn func()) {
	s.mu.Lock()
	if s.shuttingDown {
		s.mu.Unlock()
		fn()
		return
	}
	s.background.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.background.Done()
		fn()
	}()
}

// NewTaskService returns the task service of one shim process, which may
// serve several containers (a pod).
func NewTaskService(ctx context.Context, publisher Publisher, sd shutdown.Service) (Service, error) {
	// While containerd connects and sends the first Create: that Create
	// decodes a spec, starts the helper from its sealed binary and sends
	// it its Config, and a new process would make the sealed view and
	// analyse those types for encoding/json on its path.
	go container.WarmUp()
	s := &service{
		ctx:        ctx,
		publisher:  publisher,
		shutdown:   sd,
		events:     newEventQueue(ctx, publisher),
		containers: map[string]*Container{},
		creating:   map[string]bool{},
		joining:    map[string]*time.Timer{},
		socket:     serve.OwnSocket(),
		seccomp:    seccomp.NewCache(seccomp.DefaultCacheDir),
	}
	sd.RegisterCallback(func(context.Context) error {
		s.events.close(5 * time.Second)
		return nil
	})
	sd.RegisterCallback(func(ctx context.Context) error {
		s.mu.Lock()
		s.shuttingDown = true
		s.mu.Unlock()
		done := make(chan struct{})
		go func() { s.background.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		case <-time.After(backgroundWait):
		}
		return nil
	})
	// A shutdown by signal, not by the last Delete, also refuses joins
	// and frees the socket.
	sd.RegisterCallback(func(context.Context) error {
		s.mu.Lock()
		s.stopAcceptingLocked()
		s.mu.Unlock()
		return nil
	})
	return s, nil
}

func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	s.registerJoin(server)
	return nil
}

// reaperStart starts cmd through the shim's reaper: shim/serve reaps every
// child on SIGCHLD with wait4(-1), so os/exec's Wait would race it.
func reaperStart(cmd *exec.Cmd) (func() (int, error), error) {
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		return nil, err
	}
	// Callers Release cmd.Process after wait returns (nobody calls
	// cmd.Wait), which closes its pidfd.
	return func() (int, error) { return reaper.Default.Wait(cmd, ec) }, nil
}

// reaperAdopt waits through the reaper for pid, a child the shim did not
// start with os/exec (container.Options.Adopt). Subscribed first, then
// checked: an exit the reaper handled before the subscription shows as
// ESRCH; any later one comes through the subscription.
func reaperAdopt(pid int) (func() (int, error), error) {
	ec := reaper.Default.Subscribe()
	if err := unix.Kill(pid, 0); err == unix.ESRCH {
		reaper.Default.Unsubscribe(ec)
		return func() (int, error) { return -1, reaper.ErrNoSuchProcess }, nil
	}
	return func() (int, error) {
		for e := range ec {
			if e.Pid == pid {
				reaper.Default.Unsubscribe(ec)
				return e.Status, nil
			}
		}
		return -1, reaper.ErrNoSuchProcess
	}, nil
}

var (
	_ container.Starter = reaperStart
	_ process.Starter   = reaperStart
)

func (s *service) get(id string) (*Container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (s *service) getProcess(id, execID string) (*Container, *process.Process, error) {
	c, err := s.get(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.Process(execID)
	if err != nil {
		return nil, nil, err
	}
	return c, p, nil
}

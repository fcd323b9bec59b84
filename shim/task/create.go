package task

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"github.com/tupper/tupper/shim/bundle"
	"github.com/tupper/tupper/shim/cgroups"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/options"
	"github.com/tupper/tupper/shim/process"
	"golang.org/x/sys/unix"
)

// Create mounts the rootfs, wires stdio and creates the container with
// its init blocked before exec. On any error everything is undone.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	resp, err := s.create(ctx, r)
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", r.ID).Error("create failed")
		return nil, errgrpc.ToGRPC(err)
	}
	return resp, nil
}

func (s *service) create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	done, err := s.reserve(r.ID)
	if err != nil {
		return nil, err
	}
	defer done()
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	if spec.Process != nil {
		spec.Process.Terminal = r.Terminal
	}
	if ign := container.Ignored(spec); len(ign) > 0 {
		log.G(ctx).WithField("id", r.ID).Warnf("not enforced by this tupper version: %v", ign)
	}
	netPlan, err := planNetwork(ctx, r, spec)
	if err != nil {
		return nil, err
	}
	c := &Container{ID: r.ID, Bundle: r.Bundle, execs: map[string]*process.Process{}}
	var undo undoStack
	defer func() {
		if retErr != nil {
			undo.run()
		}
	}()
	if err := mountRootfs(ctx, c, r, &undo); err != nil {
		return nil, err
	}
	if r.Checkpoint != "" {
		// Restored at Start (restore.go).
		if err := s.prepareRestore(ctx, c, r, spec, netPlan, &undo); err != nil {
			return nil, err
		}
		s.register(c, r)
		return &taskAPI.CreateTaskResponse{}, nil
	}
	if err := s.createContainer(ctx, c, r, spec, netPlan, &undo); err != nil {
		return nil, err
	}
	if err := s.networkFiles(ctx, c, spec, netPlan); err != nil {
		return nil, err
	}
	s.register(c, r)
	s.watchOOM(c)
	go s.waitExit(c, c.init)
	return &taskAPI.CreateTaskResponse{Pid: uint32(c.ctr.Pid())}, nil
}

// reserve claims id for a Create, and returns the function that ends the
// claim (the container is registered by then, or the Create failed).
func (s *service) reserve(id string) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.containers[id] != nil || s.creating[id] {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrAlreadyExists)
	}
	s.creating[id] = true
	s.joinedLocked(id)
	return func() {
		s.mu.Lock()
		delete(s.creating, id)
		s.mu.Unlock()
	}, nil
}

// undoStack is what a failing Create takes back, latest first.
type undoStack []func()

func (u *undoStack) push(f func()) { *u = append(*u, f) }

func (u undoStack) run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// mountRootfs mounts the rootfs containerd passed at <bundle>/rootfs.
func mountRootfs(ctx context.Context, c *Container, r *taskAPI.CreateTaskRequest, undo *undoStack) error {
	mounts := mount.FromProto(r.Rootfs)
	if len(mounts) == 0 {
		return nil
	}
	target := filepath.Join(r.Bundle, "rootfs")
	if err := os.Mkdir(target, 0o711); err != nil && !os.IsExist(err) {
		return err
	}
	if err := mount.All(mounts, target); err != nil {
		return fmt.Errorf("mount rootfs: %w", err)
	}
	c.Rootfs = target
	undo.push(func() { bundle.UnmountRootfs(ctx, target) })
	return nil
}

// createContainer wires stdio, places the cgroup and creates the
// container, its init blocked before exec, with tupper's network attached
// (while the helper builds the container, when that is safe).
func (s *service) createContainer(ctx context.Context, c *Container, r *taskAPI.CreateTaskRequest, spec *specs.Spec, netPlan *netPlan, undo *undoStack) error {
	sio, pio, err := s.ioAndCgroup(ctx, c, r, spec, undo)
	if err != nil {
		return err
	}
	undo.push(func() { bundle.ReleaseNetwork(ctx, c.Bundle) })
	ctr, err := container.Create(container.Options{
		ID: r.ID, Bundle: r.Bundle, Spec: spec, Stdio: pio.ChildStdio(),
		Starter: reaperStart, Adopt: reaperAdopt, Cgroup: c.cg,
		Alongside: netPlan.attacher(c), Seccomp: s.seccomp,
	})
	pio.CloseChildEnds()
	if err != nil {
		if container.IsInvalidSpec(err) {
			return fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
		}
		return err
	}
	c.ctr = ctr
	c.init = process.NewInit(sio, ctr.Init(), pio)
	undo.push(func() {
		ctr.Init().Signal(unix.SIGKILL)
		ctr.Init().Wait()
	})
	if r.Terminal {
		if err := pio.AttachConsole(ctr.Init().Console()); err != nil {
			return err
		}
	}
	if err := bundle.WriteInit(r.Bundle, ctr.Pid()); err != nil {
		log.G(ctx).WithError(err).Warn("record init pid")
	}
	return nil
}

// ioAndCgroup wires the init's stdio (owned by IoUid/IoGid when the
// options name them) and plans the container's cgroup, for Create and
// for a restore alike.
func (s *service) ioAndCgroup(ctx context.Context, c *Container, r *taskAPI.CreateTaskRequest, spec *specs.Spec, undo *undoStack) (stdio.Stdio, *process.IO, error) {
	sio := stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	ns, _ := namespaces.Namespace(ctx)
	if uid, gid, ok := options.IOOwner(r.Options); ok {
		c.ioOwner = &[2]int{uid, gid}
	}
	pio, err := c.newIO(ctx, r.ID, ns, sio)
	if err != nil {
		return sio, nil, fmt.Errorf("set up stdio: %w", err)
	}
	undo.push(func() { pio.Close() })
	if c.cg, err = newPlacement(ctx, r, spec); err != nil {
		return sio, nil, err
	}
	undo.push(func() { s.removeCgroup(ctx, c) })
	return sio, pio, nil
}

// networkFiles writes the /etc files that fit the container's network
// (attached during Create) and publishes its ports.
func (s *service) networkFiles(ctx context.Context, c *Container, spec *specs.Spec, netPlan *netPlan) (err error) {
	if err := writeEtcFiles(c.Rootfs, spec, netPlan, c.att); err != nil {
		return err
	}
	c.published, err = netPlan.publishPorts(ctx, c.att)
	return err
}

// register makes the created container known; TaskCreate is queued
// before anything else can report on it.
func (s *service) register(c *Container, r *taskAPI.CreateTaskRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.containers[r.ID] = c
	s.events.send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid:         uint32(c.pid()),
	})
}

// newPlacement is the container's cgroup placement: what the spec asks
// for, checked against this host, with the driver the runtime options
// name. nil without a cgroup.
func newPlacement(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (*cgroups.Placement, error) {
	opts, err := options.FromAny(r.Options)
	if err != nil {
		return nil, err
	}
	return cgroups.NewPlacement(ctx, r.ID, spec, opts.GetSystemdCgroup())
}

func readSpec(bundleDir string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundleDir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("%w: parse config.json: %v", errdefs.ErrInvalidArgument, err)
	}
	return &spec, nil
}

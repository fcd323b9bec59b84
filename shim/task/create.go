package task

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/shim/bundle"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/options"
	"github.com/tupper/tupper/shim/process"
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
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, fmt.Errorf("restore from checkpoint: %w", errdefs.ErrNotImplemented)
	}
	s.mu.Lock()
	if s.containers[r.ID] != nil || s.creating[r.ID] {
		s.mu.Unlock()
		return nil, fmt.Errorf("container %q: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	s.creating[r.ID] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.creating, r.ID)
		s.mu.Unlock()
	}()

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
	if mounts := mount.FromProto(r.Rootfs); len(mounts) > 0 {
		target := filepath.Join(r.Bundle, "rootfs")
		if err := os.Mkdir(target, 0o711); err != nil && !os.IsExist(err) {
			return nil, err
		}
		if err := mount.All(mounts, target); err != nil {
			return nil, fmt.Errorf("mount rootfs: %w", err)
		}
		c.Rootfs = target
		defer func() {
			if retErr != nil {
				if err := mount.UnmountRecursive(target, 0); err != nil {
					log.G(ctx).WithError(err).Warn("unmount rootfs after failed create")
				}
			}
		}()
	}

	sio := stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	ns, _ := namespaces.Namespace(ctx)
	if uid, gid, ok := options.IOOwner(r.Options); ok {
		c.ioOwner = &[2]int{uid, gid}
	}
	pio, err := c.newIO(ctx, r.ID, ns, sio)
	if err != nil {
		return nil, fmt.Errorf("set up stdio: %w", err)
	}
	cg, err := newCgroup(ctx, r, spec)
	if err != nil {
		pio.Close()
		return nil, err
	}
	defer func() {
		if retErr != nil {
			cg.remove(ctx)
		}
	}()
	c.cg = cg
	ctr, err := container.Create(container.Options{
		ID:         r.ID,
		Bundle:     r.Bundle,
		Spec:       spec,
		Stdio:      pio.ChildStdio(),
		Starter:    reaperStart,
		Adopt:      reaperAdopt,
		OnSpawn:    cg.onSpawn(ctx),
		CgroupJoin: cg.join(ctx),
	})
	pio.CloseChildEnds()
	if err != nil {
		pio.Close()
		if container.IsInvalidSpec(err) {
			return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
		}
		return nil, err
	}
	c.ctr = ctr
	init := process.New("", sio, nil)
	init.IO = pio
	init.Attach(ctr.Init())
	c.init = init
	if r.Terminal {
		if err := pio.AttachConsole(ctr.Init().Console()); err != nil {
			ctr.Init().Signal(9)
			ctr.Init().Wait()
			pio.Close()
			return nil, err
		}
	}
	if err := bundle.WriteInit(r.Bundle, ctr.Pid()); err != nil {
		log.G(ctx).WithError(err).Warn("record init pid")
	}
	att, err := netPlan.attach(r.Bundle, ctr.Pid())
	if err == nil {
		err = writeEtcFiles(c.Rootfs, spec, netPlan, att)
	}
	if err == nil {
		c.published, err = netPlan.publishPorts(ctx, att)
	}
	if err != nil {
		ctr.Init().Signal(9)
		ctr.Init().Wait()
		pio.Close()
		bundle.ReleaseNetwork(ctx, r.Bundle)
		return nil, err
	}

	init.Lock()
	s.mu.Lock()
	s.containers[r.ID] = c
	s.mu.Unlock()
	s.events.send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid:         uint32(ctr.Pid()),
	})
	init.Unlock()
	s.watchOOM(c)
	go s.waitExit(c, init)
	return &taskAPI.CreateTaskResponse{Pid: uint32(ctr.Pid())}, nil
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

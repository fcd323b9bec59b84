package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"

	"github.com/tupper/tupper/shim/bundle"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/criu"
	"github.com/tupper/tupper/shim/network"
	"github.com/tupper/tupper/shim/process"
)

// A task created from a checkpoint (CreateTaskRequest.Checkpoint) is
// restored at Start, not at Create, as runc's shim does: for a CRI
// restore containerd unpacks the checkpoint's rootfs changes into the
// mounted rootfs between the two. Create mounts the rootfs, opens stdio
// and plans the cgroup and network; Start runs CRIU.

// restoreInfo is what Create keeps for Start.
type restoreInfo struct {
	image string // the checkpoint image directory containerd unpacked
	spec  *specs.Spec
	sio   stdio.Stdio
	pio   *process.IO
	net   *netPlan
}

// prepareRestore is Create's part of a restore.
func (s *service) prepareRestore(ctx context.Context, c *Container, r *taskAPI.CreateTaskRequest, spec *specs.Spec, netPlan *netPlan, undo *undoStack) error {
	if st, err := os.Stat(r.Checkpoint); err != nil || !st.IsDir() {
		return fmt.Errorf("checkpoint %q is not a directory: %w", r.Checkpoint, errdefs.ErrInvalidArgument)
	}
	sio, pio, err := s.ioAndCgroup(ctx, c, r, spec, undo)
	if err != nil {
		return err
	}
	c.init = process.NewInit(sio, nil, pio)
	c.restore = &restoreInfo{image: r.Checkpoint, spec: spec, sio: sio, pio: pio, net: netPlan}
	return nil
}

// restoreInit is Start's run for a task created from a checkpoint: CRIU
// restores the container, and its network is given back.
func (s *service) restoreInit(ctx context.Context, c *Container) func() (*container.Process, *process.IO, error) {
	return func() (_ *container.Process, _ *process.IO, retErr error) {
		ri := c.restore
		cr, err := criu.Find("", reaperStart)
		if err != nil {
			return nil, nil, fmt.Errorf("restore %s: %v: %w", c.ID, err, errdefs.ErrFailedPrecondition)
		}
		ci, err := readImageFile(ri.image)
		if err != nil {
			return nil, nil, err
		}
		rn, err := s.restoreNetwork(c, ri.net, ci)
		if err != nil {
			return nil, nil, err
		}
		defer func() {
			if retErr != nil {
				bundle.ReleaseNetwork(ctx, c.Bundle)
			}
		}()
		work, err := os.MkdirTemp(c.Bundle, "criu-work-")
		if err != nil {
			return nil, nil, err
		}
		defer os.RemoveAll(work)
		ctr, err := container.Restore(container.RestoreOptions{
			Options: container.Options{ID: c.ID, Bundle: c.Bundle, Spec: ri.spec, Stdio: ri.pio.ChildStdio(),
				Starter: reaperStart, Adopt: reaperAdopt, Cgroup: c.cg, Seccomp: s.seccomp},
			Criu: cr, ImageDir: ri.image, WorkDir: work,
			TCPEstablished: ci.TCPEstablished, ExternalUnixSockets: ci.ExternalUnixSockets,
			ShellJob: ci.ShellJob || ri.sio.Terminal, FileLocks: ci.FileLocks,
			Veths: rn.veths, Restored: rn.restored,
		})
		ri.pio.CloseChildEnds()
		if err != nil {
			if copyFile(work+"/restore.log", c.Bundle+"/criu-restore.log") == nil {
				err = fmt.Errorf("%w (kept as %s/criu-restore.log)", err, c.Bundle)
			}
			return nil, nil, err
		}
		return s.restored(ctx, c, ctr, rn)
	}
}

// restored finishes Start's restore once the container runs again.
func (s *service) restored(ctx context.Context, c *Container, ctr *container.Container, rn *restoredNetwork) (*container.Process, *process.IO, error) {
	ri := c.restore
	if ri.sio.Terminal {
		if err := ri.pio.AttachConsole(ctr.Init().Console()); err != nil {
			ctr.Init().Signal(9)
			return nil, nil, err
		}
	}
	c.ctr, c.att = ctr, rn.att
	if err := bundle.WriteInit(c.Bundle, ctr.Pid()); err != nil {
		log.G(ctx).WithError(err).Warn("record init pid")
	}
	if rn.att != nil {
		var err error
		if c.published, err = ri.net.publishPorts(ctx, rn.att); err != nil {
			log.G(ctx).WithError(err).WithField("id", c.ID).Warn("publish ports of the restored container")
		}
	}
	c.restore = nil
	return ctr.Init(), ri.pio, nil
}

// readImageFile reads tupper's record from an image; an image without
// one (made by runc, say) restores with none of its options.
func readImageFile(dir string) (*checkpointImage, error) {
	var ci checkpointImage
	b, err := container.ReadImageFile(dir, imageFile, 4096)
	if errors.Is(err, os.ErrNotExist) {
		return &ci, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &ci); err != nil {
		return nil, fmt.Errorf("%s in the checkpoint: %v: %w", imageFile, err, errdefs.ErrInvalidArgument)
	}
	return &ci, nil
}

// restoredNetwork is how a restored container gets its network back.
type restoredNetwork struct {
	veths    []container.Veth
	att      *network.Attachment
	restored func(pid int) error // while CRIU holds the processes
}

// restoreNetwork plans the restored container's network. A checkpoint
// of a container tupper networked holds its eth0: CRIU makes the veth
// again with the host end on this container's bridge, and eth0 keeps its
// addresses when they are free here, or gets new ones. A checkpoint
// without one, restored where tupper networks the container, gets a new
// veth once restored, as a new container would. Otherwise the network is
// someone else's (a pod's netns, joined by path) or none.
func (s *service) restoreNetwork(c *Container, n *netPlan, ci *checkpointImage) (*restoredNetwork, error) {
	rn := &restoredNetwork{}
	if ci.Addr == "" {
		if n.managed {
			rn.restored = func(pid int) (err error) {
				rn.att, err = n.attach(c.Bundle, fmt.Sprintf("/proc/%d/ns/net", pid))
				return err
			}
		}
		return rn, nil
	}
	if !n.managed {
		return nil, fmt.Errorf("the checkpoint holds tupper's eth0, but this container gets no tupper network (network mode %s, or a netns path): %w", n.cfg.Mode, errdefs.ErrFailedPrecondition)
	}
	want4, err4 := netip.ParseAddr(ci.Addr)
	want6, _ := netip.ParseAddr(ci.Addr6)
	if err4 != nil || !want4.Is4() {
		return nil, fmt.Errorf("%s in the checkpoint: bad address %q: %w", imageFile, ci.Addr, errdefs.ErrInvalidArgument)
	}
	if err := bundle.RecordNetwork(c.Bundle, n.cfg, n.owner); err != nil {
		return nil, err
	}
	att, err := network.PrepareRestore(n.cfg, n.owner, want4, want6)
	if err != nil {
		bundle.ReleaseNetwork(context.Background(), c.Bundle)
		return nil, fmt.Errorf("tupper network (bridge %s, subnet %s): %w", n.cfg.Bridge, n.cfg.Subnet, err)
	}
	rn.att = att
	rn.veths = []container.Veth{{Inside: "eth0", Outside: att.HostVeth + "@" + n.cfg.Bridge}}
	if att.Addr.Addr() != want4 || (want6.IsValid() && att.Addr6.Addr() != want6) {
		rn.restored = func(pid int) error {
			return network.Readdress(fmt.Sprintf("/proc/%d/ns/net", pid), att)
		}
	}
	return rn, nil
}

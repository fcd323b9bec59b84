package task

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/criu"
	"github.com/tupper/tupper/shim/process"
)

// imageFile is tupper's record in a checkpoint image: the addresses the
// container's eth0 had, so that a restore can ask for them again, and
// the CRIU options the dump took that a restore must repeat (containerd
// passes none to a restore). Read back from an image nobody vouches for,
// so every field is checked where it is used.
const imageFile = "tupper-checkpoint.json"

type checkpointImage struct {
	Addr                string `json:"addr,omitempty"`
	Addr6               string `json:"addr6,omitempty"`
	TCPEstablished      bool   `json:"tcp_established,omitempty"`
	ExternalUnixSockets bool   `json:"external_unix_sockets,omitempty"`
	ShellJob            bool   `json:"shell_job,omitempty"`
	FileLocks           bool   `json:"file_locks,omitempty"`
}

// Checkpoint saves a running (or paused, as containerd's client pauses it
// first) container with CRIU into r.Path. containerd's options are runc's
// CheckpointOptions: exit, open TCP, external unix sockets, terminal,
// file locks, empty namespaces, work and parent paths.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*types.Empty, error) {
	if err := s.checkpoint(ctx, r); err != nil {
		log.G(ctx).WithError(err).WithField("id", r.ID).Error("checkpoint failed")
		return nil, errgrpc.ToGRPC(err)
	}
	return &types.Empty{}, nil
}

func (s *service) checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) error {
	c, err := s.get(r.ID)
	if err != nil {
		return err
	}
	opts, err := checkpointOptions(r)
	if err != nil {
		return err
	}
	if st := c.init.Snapshot().Status; c.ctr == nil || (st != process.Running && st != process.Paused) {
		return fmt.Errorf("container %s is %s; only a running or paused one can be checkpointed: %w", c.ID, st, errdefs.ErrFailedPrecondition)
	}
	cr, err := criu.Find("", reaperStart)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %v: %w", c.ID, err, errdefs.ErrFailedPrecondition)
	}
	work, keepWork := opts.WorkPath, opts.WorkPath != ""
	if !keepWork {
		if work, err = os.MkdirTemp(c.Bundle, "criu-work-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	if err := c.writeImageFile(r.Path, opts); err != nil {
		return err
	}
	err = c.ctr.Checkpoint(container.CheckpointOptions{
		Criu: cr, ImageDir: r.Path, WorkDir: work, ParentImage: opts.ParentPath,
		LeaveRunning: !opts.Exit, TCPEstablished: opts.OpenTcp, ExternalUnixSockets: opts.ExternalUnixSockets,
		ShellJob: opts.Terminal, FileLocks: opts.FileLocks, EmptyNamespaces: namespaceTypes(opts.EmptyNamespaces),
	})
	if err != nil && !keepWork {
		// As runc's shim does: the log outlives the work directory.
		dst := filepath.Join(c.Bundle, "criu-dump.log")
		if copyFile(filepath.Join(work, "dump.log"), dst) == nil {
			err = fmt.Errorf("%w (kept as %s)", err, dst)
		}
	}
	return err
}

// checkpointOptions are r's options: none, or runc's.
func checkpointOptions(r *taskAPI.CheckpointTaskRequest) (*runcoptions.CheckpointOptions, error) {
	if r.Path == "" {
		return nil, fmt.Errorf("checkpoint: no image path: %w", errdefs.ErrInvalidArgument)
	}
	if r.Options == nil {
		return &runcoptions.CheckpointOptions{}, nil
	}
	v, err := typeurl.UnmarshalAny(r.Options)
	if err != nil {
		return nil, fmt.Errorf("checkpoint options: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	opts, ok := v.(*runcoptions.CheckpointOptions)
	if !ok {
		return nil, fmt.Errorf("checkpoint options of type %T, want containerd's CheckpointOptions: %w", v, errdefs.ErrInvalidArgument)
	}
	return opts, nil
}

// namespaceTypes maps runc's empty-namespace names (OCI type names) to
// types; unknown ones are dropped by the container package.
func namespaceTypes(names []string) []specs.LinuxNamespaceType {
	var out []specs.LinuxNamespaceType
	for _, n := range names {
		out = append(out, specs.LinuxNamespaceType(n))
	}
	return out
}

// writeImageFile writes tupper's record into the image directory.
func (c *Container) writeImageFile(dir string, opts *runcoptions.CheckpointOptions) error {
	ci := checkpointImage{TCPEstablished: opts.OpenTcp, ExternalUnixSockets: opts.ExternalUnixSockets,
		ShellJob: opts.Terminal, FileLocks: opts.FileLocks}
	// With the network namespace left out, a restore makes eth0 anew.
	if c.att != nil && !slices.Contains(opts.EmptyNamespaces, string(specs.NetworkNamespace)) {
		ci.Addr = c.att.Addr.Addr().String()
		if c.att.Addr6.IsValid() {
			ci.Addr6 = c.att.Addr6.Addr().String()
		}
	}
	b, err := json.Marshal(ci)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Never through a link a caller left in its image directory.
	f, err := os.OpenFile(filepath.Join(dir, imageFile), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(b)
	return err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	_, err = io.Copy(out, in)
	return err
}

// Package migrate moves a running container from one containerd to
// another on the same machine with CRIU (stop and copy): a checkpoint that
// stops it, its rootfs changes as a layer, and a restore on the other
// side through the entry containerd keeps for CRI checkpoint archives
// (Container.Restore), which applies the layer between the task's Create
// and Start. The directory between the two holds exactly that archive's
// layout: checkpoint/ (CRIU's images) and rootfs-diff.tar.
//
// The base image must already be in the destination (same name); the
// container keeps its id, spec, snapshotter and runtime with its options,
// so a tupper container keeps its bridge and, when it is free by then, its
// address (the source releases it before the restore).
package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Options say what to move where.
type Options struct {
	From, To     *client.Client
	FromNS, ToNS string
	ID           string
	// Dir is where the checkpoint travels (made if missing; its contents
	// are the caller's to remove).
	Dir string
	// TCP keeps open TCP connections (CRIU's tcp-established).
	TCP bool
	// IO is the moved container's stdio on the destination; nil means none.
	IO cio.Creator
}

// Result is how long each part took; Downtime is from the moment the
// container was frozen to the moment it runs again on the destination.
type Result struct {
	Checkpoint, Transfer, Restore, Downtime time.Duration
	Pid                                     uint32 // on the destination
}

// Move moves opts.ID; on success it is gone from the source (container,
// snapshot and checkpoint image) and running on the destination.
func Move(ctx context.Context, opts Options) (*Result, error) {
	from := namespaces.WithNamespace(ctx, opts.FromNS)
	to := namespaces.WithNamespace(ctx, opts.ToNS)
	src, err := opts.From.LoadContainer(from, opts.ID)
	if err != nil {
		return nil, err
	}
	info, err := src.Info(from)
	if err != nil {
		return nil, err
	}
	var res Result
	t0 := time.Now()
	ckpt, err := checkpoint(from, src, opts)
	if err != nil {
		return nil, err
	}
	defer opts.From.ImageService().Delete(from, ckpt.Name())
	res.Checkpoint = time.Since(t0)

	t1 := time.Now()
	if err := writeRootfsDiff(from, opts.From, ckpt, filepath.Join(opts.Dir, "rootfs-diff.tar")); err != nil {
		return nil, err
	}
	// The source lets go of what the destination takes over: its
	// addresses and cgroup.
	if err := deleteTask(from, src); err != nil {
		return nil, err
	}
	res.Transfer = time.Since(t1)

	t2 := time.Now()
	img, err := opts.To.GetImage(to, info.Image)
	if err != nil {
		return nil, fmt.Errorf("the destination needs the image %s: %w", info.Image, err)
	}
	dst, err := opts.To.NewContainer(to, opts.ID, client.WithSnapshotter(info.Snapshotter), client.WithNewSnapshot(opts.ID, img),
		client.WithImageName(info.Image), client.WithContainerLabels(info.Labels),
		func(_ context.Context, _ *client.Client, c *containers.Container) error {
			c.Spec, c.Runtime = info.Spec, info.Runtime
			return nil
		})
	if err != nil {
		return nil, err
	}
	ioc := opts.IO
	if ioc == nil {
		ioc = cio.NullIO
	}
	if _, err := dst.Restore(to, ioc, filepath.Join(opts.Dir, "checkpoint")); err != nil {
		dst.Delete(to, client.WithSnapshotCleanup)
		return nil, fmt.Errorf("restore on the destination: %w", err)
	}
	res.Restore, res.Downtime = time.Since(t2), time.Since(t0)
	if task, err := dst.Task(to, nil); err == nil {
		res.Pid = task.Pid()
	}
	return &res, src.Delete(from, client.WithSnapshotCleanup)
}

// checkpoint stops the container into Dir/checkpoint (CRIU's images,
// written there directly) and returns the checkpoint image, which holds
// the rootfs changes.
func checkpoint(ctx context.Context, c client.Container, opts Options) (client.Image, error) {
	task, err := c.Task(ctx, nil)
	if err != nil {
		return nil, err
	}
	images := filepath.Join(opts.Dir, "checkpoint")
	if err := os.MkdirAll(images, 0o700); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("migrate/%s:%d", opts.ID, time.Now().UnixNano())
	img, err := task.Checkpoint(ctx, client.WithCheckpointName(name), func(r *client.CheckpointTaskInfo) error {
		r.Options = &runcoptions.CheckpointOptions{Exit: true, OpenTcp: opts.TCP, FileLocks: true, ImagePath: images}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if img.Name() == "" {
		return nil, errors.New("checkpoint: containerd made no checkpoint image (runc's shim with an image path skips it)")
	}
	return img, nil
}

// writeRootfsDiff copies the checkpoint's rootfs layer to path.
func writeRootfsDiff(ctx context.Context, cl *client.Client, img client.Image, path string) error {
	index, err := content.ReadBlob(ctx, cl.ContentStore(), img.Target())
	if err != nil {
		return err
	}
	desc, err := layerOf(index)
	if err != nil {
		return err
	}
	ra, err := cl.ContentStore().ReaderAt(ctx, desc)
	if err != nil {
		return err
	}
	defer ra.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, content.NewReader(ra)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func deleteTask(ctx context.Context, c client.Container) error {
	task, err := c.Task(ctx, nil)
	if err != nil {
		return err
	}
	_, err = task.Delete(ctx)
	return err
}

// layerOf finds the rootfs layer in a checkpoint image's index.
func layerOf(b []byte) (ocispec.Descriptor, error) {
	var index ocispec.Index
	if err := json.Unmarshal(b, &index); err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, m := range index.Manifests {
		if m.MediaType == ocispec.MediaTypeImageLayerGzip {
			return m, nil
		}
	}
	return ocispec.Descriptor{}, errors.New("the checkpoint image has no rootfs layer")
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"

	"github.com/tupper/tupper/internal/migrate"
)

// counterArgs is the checkpointed program: a shell counting in memory.
var counterArgs = []string{"sh", "-c", "i=0; while :; do i=$((i+1)); sleep 0.1; done"}

// checkpointRestore times CRIU checkpoint (that stops the container) and
// restore through each runtime's shim, tupper (NetworkMode=none, as runc's
// containers have no network) against runc, and tupper's migration of a
// running container to another namespace of this containerd.
func (b *bench) checkpointRestore() (_ []*Result, retErr error) {
	img, err := b.busybox()
	if err != nil {
		return nil, err
	}
	defer b.removeContainersAfter(&retErr)
	_, none, ovl, _ := b.stacks()
	subjects := []string{"tupper", ovl.name}
	ck := newResult("checkpoint/restore", "checkpoint (the container stops), tupper NetworkMode=none", "ms", subjects)
	ck.Note = "a busybox shell counting in memory, checkpointed through the task API's Checkpoint with containerd's CheckpointOptions{Exit, ImagePath} (CRIU writes its images into a directory, no content-store copy), until the task's exit; both shims drive the same CRIU " +
		"(tupper through its RPC, runc through runc checkpoint)"
	rs := newResult("checkpoint/restore", "restore, tupper NetworkMode=none", "ms", subjects)
	rs.Note = "the checkpoint restored into a new container of the same spec and image: Container.Restore (task Create with the checkpoint directory, then Start) until it returns with the process tree running"
	byName := map[string]stack{"tupper": none, ovl.name: ovl}
	err = interleave(b.runs, subjects, func(_ int, name string) error {
		c, r, err := b.checkpointOnce(byName[name], img)
		if err != nil {
			return err
		}
		ck.add(name, ms(c))
		rs.add(name, ms(r))
		return nil
	})
	if err != nil {
		return nil, err
	}
	mg, err := b.migrations(img)
	if err != nil {
		return nil, err
	}
	return []*Result{ck, rs, mg}, nil
}

// checkpointOnce starts a counter with s, checkpoints it (stopping it)
// and restores it as a new container.
func (b *bench) checkpointOnce(s stack, img containerd.Image) (ckpt, restore time.Duration, err error) {
	id := b.newID("ckpt")
	c, err := b.newContainer(s, img, id, nil, counterArgs...)
	if err != nil {
		return 0, 0, err
	}
	tk, err := c.NewTask(b.ctx, cio.NullIO)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: new task: %w", s.name, err)
	}
	exited, err := tk.Wait(b.ctx)
	if err != nil {
		return 0, 0, err
	}
	if err := tk.Start(b.ctx); err != nil {
		return 0, 0, fmt.Errorf("%s: start: %w", s.name, err)
	}
	dir := filepath.Join(b.work, id)
	defer os.RemoveAll(dir)
	opts, err := typeurl.MarshalAnyToProto(&runcoptions.CheckpointOptions{Exit: true, ImagePath: dir})
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if _, err := b.client.TaskService().Checkpoint(b.ctx, &tasks.CheckpointTaskRequest{ContainerID: id, Options: opts}); err != nil {
		return 0, 0, fmt.Errorf("%s: checkpoint: %w", s.name, err)
	}
	<-exited
	ckpt = time.Since(t0)
	if _, err := tk.Delete(b.ctx); err != nil {
		return 0, 0, err
	}
	if err := c.Delete(b.ctx, containerd.WithSnapshotCleanup); err != nil {
		return 0, 0, err
	}
	c, err = b.newContainer(s, img, id, nil, counterArgs...)
	if err != nil {
		return 0, 0, err
	}
	t1 := time.Now()
	if _, err := c.Restore(b.ctx, cio.NullIO, dir); err != nil {
		return 0, 0, fmt.Errorf("%s: restore: %w", s.name, err)
	}
	restore = time.Since(t1)
	tk, err = c.Task(b.ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	if st, err := tk.Status(b.ctx); err != nil || st.Status != containerd.Running {
		return 0, 0, fmt.Errorf("%s: the restored task is %v (%v)", s.name, st.Status, err)
	}
	_, err = tk.Delete(b.ctx, containerd.WithProcessKill)
	if err == nil {
		err = c.Delete(b.ctx, containerd.WithSnapshotCleanup)
	}
	return ckpt, restore, err
}

// migrations times internal/migrate.Move of a running tupper container
// (with its bridge network) to another namespace of this containerd.
func (b *bench) migrations(img containerd.Image) (*Result, error) {
	tup, _, _, _ := b.stacks()
	r := newResult("checkpoint/restore", "migration downtime, tupper with its bridge network", "ms", []string{"tupper"})
	r.Note = "internal/migrate.Move (docs: hack/README.md, Migration): from the freeze of a running container to its process tree running again elsewhere: checkpoint that stops it, rootfs diff to a file, " +
		"task delete, new container and restore on the destination (here another namespace of the bench's containerd; TestMigrate moves between two containerds). No runc row: runc's shim skips the checkpoint image, and with it the rootfs diff, when given an image path"
	ns, _ := namespaces.Namespace(b.ctx)
	dstNS := ns + "-migrate"
	// No lease here: the bench's lease belongs to its own namespace.
	plain := context.WithoutCancel(context.Background())
	dst := namespaces.WithNamespace(plain, dstNS)
	defer b.dropNamespace(dstNS)
	f, err := os.Open(b.shim.busyboxTar)
	if err != nil {
		return nil, err
	}
	imgs, err := b.client.Import(dst, f)
	f.Close()
	if err != nil || len(imgs) != 1 {
		return nil, fmt.Errorf("import busybox into %s: %v", dstNS, err)
	}
	if err := containerd.NewImage(b.client, imgs[0]).Unpack(dst, "tupper"); err != nil {
		return nil, err
	}
	for i := 0; i < b.runs; i++ {
		id := b.newID("migrate")
		c, err := b.newContainer(tup, img, id, nil, counterArgs...)
		if err != nil {
			return nil, err
		}
		tk, err := c.NewTask(b.ctx, cio.NullIO)
		if err == nil {
			err = tk.Start(b.ctx)
		}
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(b.work, id)
		res, err := migrate.Move(plain, migrate.Options{From: b.client, To: b.client, FromNS: ns, ToNS: dstNS, ID: id, Dir: dir})
		os.RemoveAll(dir)
		if err != nil {
			return nil, fmt.Errorf("migrate %s: %w", id, err)
		}
		r.add("tupper", ms(res.Downtime))
		moved, err := b.client.LoadContainer(dst, id)
		if err != nil {
			return nil, err
		}
		if tk, err := moved.Task(dst, nil); err == nil {
			tk.Delete(dst, containerd.WithProcessKill)
		}
		if err := moved.Delete(dst, containerd.WithSnapshotCleanup); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// dropNamespace removes what migrations left in ns, then ns.
func (b *bench) dropNamespace(ns string) {
	ctx := namespaces.WithNamespace(context.Background(), ns)
	if cs, err := b.client.Containers(ctx); err == nil {
		for _, c := range cs {
			if tk, err := c.Task(ctx, nil); err == nil {
				tk.Delete(ctx, containerd.WithProcessKill)
			}
			c.Delete(ctx, containerd.WithSnapshotCleanup)
		}
	}
	if imgs, err := b.client.ImageService().List(ctx); err == nil {
		for _, i := range imgs {
			b.client.ImageService().Delete(ctx, i.Name, images.SynchronousDelete())
		}
	}
	if err := b.client.NamespaceService().Delete(ctx, ns); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "bench: namespace %s: %v\n", ns, err)
	}
}

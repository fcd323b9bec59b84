package shim

import (
	"context"
	"os"
	"syscall"
	"testing"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/tupper/tupper/internal/harness"
)

// TestDeleteAfterInitGone: a created task whose init died by itself (as
// at a start refused at exec) is killed (all) and deleted, its rootfs
// unmounted. containerd's Delete with WithProcessKill sends that Kill
// first and gives up on an error; with the systemd driver the init's scope
// is gone by then (systemd removes an emptied scope), and a Kill that
// failed on the missing cgroup left the task, its shim and its mount.
func TestDeleteAfterInitGone(t *testing.T) {
	e := newEnv(t)
	const id = "gone1"
	ctx, tk := e.createSleeper(id)
	pid := int(tk.Pid())
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return syscall.Kill(pid, 0) != nil }, "the init to die")
	if e.slice != "" {
		scope := e.containerCgroup("", id)
		waitFor(t, func() bool { _, err := os.Stat(scope); return err != nil }, "systemd to remove the emptied scope "+scope)
	}
	if _, err := tk.Delete(ctx, client.WithProcessKill); err != nil {
		t.Fatalf("delete with kill of a task whose init is gone: %v", err)
	}
	if ms := e.stateMounts(); len(ms) != 0 {
		t.Fatalf("mounts left after the delete: %v", ms)
	}
}

// createSleeper creates, through containerd's client, container id (the
// test image running `sleep 1000` on tupper's runtime, in the test's slice
// under the systemd driver) and its task, not started. The container and
// its snapshot go when the test ends; the task is the caller's to delete.
func (e *env) createSleeper(id string) (context.Context, client.Task) {
	e.t.Helper()
	cl, ctx := e.client()
	img, err := cl.GetImage(ctx, image)
	if err != nil {
		e.t.Fatal(err)
	}
	specOpts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "1000")}
	if e.slice != "" {
		specOpts = append(specOpts, oci.WithCgroup(e.slice+":"+scopePrefix+":"+id))
	}
	c, err := cl.NewContainer(ctx, id, client.WithNewSnapshot(id, img), client.WithNewSpec(specOpts...),
		client.WithRuntime(harness.TupperRuntimeType, &runtimeoptions.Options{ConfigPath: e.RuntimeConfig}))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Delete(ctx, client.WithSnapshotCleanup) })
	tk, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		e.t.Fatal(err)
	}
	return ctx, tk
}

package integration

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tupper/tupper/internal/testutil"
)

// TestCRICheckpoint: `crictl checkpoint` (CRI CheckpointContainer, the
// kubelet's checkpoint API) of a pod's running container writes the
// checkpoint archive Kubernetes documents (CRIU's images under
// checkpoint/, rootfs-diff.tar, spec.dump, config.dump), and the container
// goes on running. The archive is then restored as a new container of
// the same pod, with the spec it holds: containerd v2.4.2's CRI has no
// CreateContainer from an archive, so the test takes the entry point
// containerd keeps for it (the client's Container.Restore, which unpacks
// rootfs-diff.tar between the task's Create and Start). On the tupper and
// the runc handler alike, the restored process counts on from where the
// checkpoint took it, with the file its rootfs had.
func TestCRICheckpoint(t *testing.T) {
	if _, err := exec.LookPath("criu"); err != nil {
		testutil.Require(t, "needs criu >= 4.0 (make deps)")
	}
	s := newCRIStack(t)
	image := "registry.k8s.io/e2e-test-images/busybox:1.29-2"
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	mk := exec.Command("go", "run", "../hack/mkimage", "-kind", "busybox", "-name", s.registry+"/e2e-test-images/busybox:1.29-2", "-o", archive)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v %s", err, out)
	}
	if out, err := s.script("push", archive); err != nil {
		t.Fatalf("push: %v %s", err, out)
	}
	s.mustCrictl("pull", image)
	for _, handler := range []string{"tupper", "runc"} {
		t.Run(handler, func(t *testing.T) {
			s.t = t
			s.checkpointRestore(handler, image)
		})
	}
}

const criCounter = `echo hello-rootfs > /written; i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.05; done`

func (s *criStack) checkpointRestore(handler, image string) {
	t := s.t
	work := t.TempDir()
	uid := fmt.Sprintf("tupper-cr-%s-%d", handler, time.Now().UnixNano())
	t.Cleanup(func() { testutil.RemoveCgroups(t, uid) })
	podCfg := writeJSON(t, filepath.Join(work, "pod.json"), map[string]any{
		"metadata":      map[string]any{"name": "cr-" + handler, "namespace": "tupper-it", "uid": uid},
		"log_directory": filepath.Join(work, "logs"), "linux": map[string]any{"cgroup_parent": "/" + uid},
	})
	ctrCfg := writeJSON(t, filepath.Join(work, "counter.json"), map[string]any{
		"metadata": map[string]any{"name": "counter"}, "image": map[string]any{"image": image},
		"command": []string{"sh", "-c", criCounter}, "log_path": "counter.log", "linux": map[string]any{},
	})
	pod := s.mustCrictl("runp", "--runtime", handler, podCfg)
	t.Cleanup(func() { s.crictl("stopp", pod); s.crictl("rmp", pod) })
	id := s.mustCrictl("create", pod, ctrCfg, podCfg)
	s.mustCrictl("start", id)
	pid := s.containerPid(id)
	before := countPast(t, pid, 3)

	ckpt := filepath.Join(work, "checkpoint.tar")
	s.mustCrictl("checkpoint", "--export="+ckpt, id)
	after := countPast(t, pid, before) // forensic checkpoints leave it running
	dir := filepath.Join(work, "unpacked")
	untar(t, ckpt, dir)
	for _, f := range []string{"checkpoint/inventory.img", "rootfs-diff.tar", "spec.dump", "config.dump"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("the checkpoint archive has no %s", f)
		}
	}
	s.mustCrictl("stop", id)
	s.mustCrictl("rm", id)

	restored := s.restoreArchive(handler, dir)
	n := countPast(t, restored, 0)
	if n < before || n > after+1000 {
		t.Fatalf("restored counter reads %d; the checkpoint was taken between %d and %d", n, before, after)
	}
	if countPast(t, restored, n) < before {
		t.Fatal("the restored counter started over")
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/written", restored)); err != nil || string(b) != "hello-rootfs\n" {
		t.Fatalf("/written after restore: %q %v", b, err)
	}
}

// restoreArchive creates a container of the pod from the unpacked
// archive's spec and restores its checkpoint; it returns the restored
// init's pid and removes the container when the test ends.
func (s *criStack) restoreArchive(handler, dir string) int {
	t := s.t
	b, err := os.ReadFile(filepath.Join(dir, "spec.dump"))
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		RootfsImageName string `json:"rootfsImageName"`
	}
	if b, err = os.ReadFile(filepath.Join(dir, "config.dump")); err != nil || json.Unmarshal(b, &cfg) != nil {
		t.Fatalf("config.dump: %v %s", err, b)
	}
	cl, err := client.New(filepath.Join(s.dir, "containerd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	img, err := cl.GetImage(ctx, cfg.RootfsImageName)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("restored-%s-%d", handler, time.Now().UnixNano())
	// The shim the handler runs: hack/cri.sh points the tupper handler at
	// bin/'s, which only a runtime given by path reaches from the client.
	rt := "io.containerd.runc.v2"
	if handler == "tupper" {
		rt = "io.containerd.tupper.v2"
		if p, err := filepath.Abs("../bin/containerd-shim-tupper-v2"); err == nil && exists(p) {
			rt = p
		}
	}
	c, err := cl.NewContainer(ctx, id, client.WithSnapshotter("tupper"), client.WithNewSnapshot(id, img),
		client.WithSpec(&spec), client.WithRuntime(rt, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if task, err := c.Task(ctx, nil); err == nil {
			task.Kill(ctx, syscall.SIGKILL)
			if ch, err := task.Wait(ctx); err == nil {
				<-ch
			}
			task.Delete(ctx)
		}
		c.Delete(ctx, client.WithSnapshotCleanup)
	})
	if _, err := c.Restore(ctx, cio.NullIO, filepath.Join(dir, "checkpoint")); err != nil {
		t.Fatalf("restore the archive: %v", err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return int(task.Pid())
}

func (s *criStack) containerPid(id string) int {
	var info struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(s.mustCrictl("inspect", "-o", "json", id)), &info); err != nil || info.Info.Pid == 0 {
		s.t.Fatalf("no pid for %s: %v", id, err)
	}
	return info.Info.Pid
}

// countPast waits until the counter of the container whose init is pid
// reads above n (read through the container's root), and returns it.
func countPast(t *testing.T, pid, n int) int {
	t.Helper()
	var got int
	waitUntil(t, 20*time.Second, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/tmp/n", pid))
		if err != nil {
			return false
		}
		got, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && got > n
	}, fmt.Sprintf("the counter of %d past %d", pid, n))
	return got
}

// untar unpacks the regular files and directories of a checkpoint
// archive into dir.
func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Clean(h.Name)
		if strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			t.Fatalf("archive entry %q leaves its directory", h.Name)
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, 0o700)
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(p), 0o700)
			out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(out, tr)
			out.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

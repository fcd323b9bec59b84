package clients

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// These tests use containerd's Go client the way containerd's own client
// integration tests do (TestContainerPTY, TestShimDoesNotLeakSockets,
// TestShimInCgroup), each on runc first, as the oracle, then on tupper.

func (e *env) client(t *testing.T, r *runner) (*containerd.Client, context.Context, containerd.Image) {
	t.Helper()
	c, err := containerd.New(e.Address, containerd.WithDefaultNamespace(r.ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), r.ns), 2*time.Minute)
	t.Cleanup(cancel)
	img, err := c.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	return c, ctx, img
}

func newContainer(t *testing.T, ctx context.Context, c *containerd.Client, img containerd.Image, r *runner, id string, runtimeOpts any, specOpts ...oci.SpecOpts) containerd.Container {
	t.Helper()
	ctr, err := c.NewContainer(ctx, id, containerd.WithSnapshotter(r.e.Snapshotter), containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(append([]oci.SpecOpts{oci.WithImageConfig(img)}, specOpts...)...),
		containerd.WithRuntime(r.runtime, runtimeOpts))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup) })
	return ctr
}

// TestContainerdClient runs the client cases on one environment.
func TestContainerdClient(t *testing.T) {
	e := newEnv(t)
	t.Run("TerminalWithoutStderr", func(t *testing.T) { terminalWithoutStderr(t, e) })
	t.Run("ShimDoesNotLeakSockets", func(t *testing.T) { shimDoesNotLeakSockets(t, e) })
	t.Run("ShimInCgroup", func(t *testing.T) { shimInCgroup(t, e) })
}

// terminalWithoutStderr: a task and an exec with a terminal whose
// client names a stderr FIFO it never makes (cio's FIFO set with a
// terminal, as containerd's TestContainerPTY and nerdctl `run -t` do).
func terminalWithoutStderr(t *testing.T, e *env) {
	for _, r := range e.runners() {
		t.Run(r.name, func(t *testing.T) {
			c, ctx, img := e.client(t, r)
			ctr := newContainer(t, ctx, c, img, r, "pty", nil, oci.WithTTY, oci.WithProcessArgs("sh", "-c", "tty; echo hello; sleep 100"))
			out, ioc := terminalIO(t, ctx, "pty")
			task, err := ctr.NewTask(ctx, ioc)
			if err != nil {
				t.Fatalf("task with a terminal and no stderr FIFO: %v", err)
			}
			defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
			if err := task.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if got := waitOutput(t, out, "hello"); !strings.Contains(got, "/dev/pts/0") {
				t.Errorf("terminal output %q, want the tty's name", got)
			}
			eout, eio := terminalIO(t, ctx, "exec")
			spec, err := ctr.Spec(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pspec := *spec.Process
			pspec.Args = []string{"sh", "-c", "tty; echo from-exec; exit 3"}
			p, err := task.Exec(ctx, "exec-tty", &pspec, eio)
			if err != nil {
				t.Fatalf("exec with a terminal and no stderr FIFO: %v", err)
			}
			st, err := p.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if code := (<-st).ExitCode(); code != 3 {
				t.Errorf("exec exit %d, want 3", code)
			}
			waitOutput(t, eout, "from-exec")
			p.Delete(ctx)
		})
	}
}

// terminalIO is a FIFO set made by cio for a terminal (no stderr FIFO is
// created, though its path is named) read through cio's DirectIO.
func terminalIO(t *testing.T, ctx context.Context, id string) (*output, cio.Creator) {
	t.Helper()
	fifos, err := cio.NewFIFOSetInDir(t.TempDir(), id, true)
	if err != nil {
		t.Fatal(err)
	}
	if fifos.Stderr == "" {
		t.Fatal("cio named no stderr FIFO: the case under test is gone")
	}
	dio, err := cio.NewDirectIO(ctx, fifos)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dio.Cancel(); dio.Close() })
	if _, err := os.Stat(fifos.Stderr); err == nil {
		t.Fatal("cio made the stderr FIFO: the case under test is gone")
	}
	out := newOutput()
	go io.Copy(out, dio.Stdout) // ends when the FIFO is closed
	return out, func(string) (cio.IO, error) { return dio, nil }
}

// waitOutput waits until out contains want, failing after 30 s, and
// returns all of out.
func waitOutput(t *testing.T, out *output, want string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := out.waitFor(ctx, want); err != nil {
		t.Fatalf("output %q never contained %q", out.String(), want)
	}
	return out.String()
}

// shimDoesNotLeakSockets: once Delete has returned, the shim's socket
// is gone. tupper's shim removed it only after its shutdown callbacks, so
// containerd's test of this found it still there in most runs.
func shimDoesNotLeakSockets(t *testing.T, e *env) {
	for _, r := range e.runners() {
		t.Run(r.name, func(t *testing.T) {
			c, ctx, img := e.client(t, r)
			leaks := 0
			const runs = 8
			for i := 0; i < runs; i++ {
				id := fmt.Sprintf("sock%d", i)
				ctr := newContainer(t, ctx, c, img, r, id, nil, oci.WithProcessArgs("sleep", "30"))
				task, err := ctr.NewTask(ctx, cio.NullIO)
				if err != nil {
					t.Fatal(err)
				}
				exited, err := task.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := task.Start(ctx); err != nil {
					t.Fatal(err)
				}
				if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				<-exited
				if _, err := task.Delete(ctx); err != nil {
					t.Fatal(err)
				}
				if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
					t.Fatal(err)
				}
				addr, err := shim.SocketAddress(ctx, e.Address, id, false)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(strings.TrimPrefix(addr, "unix://")); err == nil {
					leaks++
				}
			}
			if leaks > 0 {
				t.Errorf("the shim's socket still existed after Delete in %d of %d runs", leaks, runs)
			}
		})
	}
}

// shimInCgroup: the ShimCgroup runtime option (runc's options
// message, which tupper reads too) puts the shim in that cgroup.
func shimInCgroup(t *testing.T, e *env) {
	for _, r := range e.runners() {
		t.Run(r.name, func(t *testing.T) {
			c, ctx, img := e.client(t, r)
			cg := "/" + r.ns + "-shim"
			dirs := makeCgroup(t, cg)
			ctr := newContainer(t, ctx, c, img, r, "shimcg", &runcoptions.Options{ShimCgroup: cg}, oci.WithProcessArgs("sleep", "30"))
			task, err := ctr.NewTask(ctx, cio.NullIO)
			if err != nil {
				t.Fatal(err)
			}
			defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
			procs, _ := os.ReadFile(filepath.Join(dirs[0], "cgroup.procs"))
			var shims []string
			for _, p := range strings.Fields(string(procs)) {
				exe, _ := os.Readlink("/proc/" + p + "/exe")
				shims = append(shims, filepath.Base(exe))
			}
			want := "containerd-shim-" + r.name + "-v2"
			if len(shims) != 1 || shims[0] != want {
				t.Errorf("cgroup %s holds %v, want the shim (%s)", cg, shims, want)
			}
		})
	}
}

// makeCgroup makes cgroup path in every hierarchy (v1) or the unified
// one, removed when the test ends (once the shim that was in it is gone).
func makeCgroup(t *testing.T, path string) []string {
	t.Helper()
	var dirs []string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		dirs = []string{"/sys/fs/cgroup" + path}
	} else {
		for _, h := range []string{"pids", "memory", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "systemd", "unified"} {
			if _, err := os.Stat("/sys/fs/cgroup/" + h); err == nil {
				dirs = append(dirs, "/sys/fs/cgroup/"+h+path)
			}
		}
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(d, "/cpuset/") {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, _ := os.ReadFile(filepath.Join(filepath.Dir(d), f))
				os.WriteFile(filepath.Join(d, f), b, 0)
			}
		}
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			for i := 0; i < 100; i++ {
				if err := os.Remove(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(50 * time.Millisecond) // the shim exits just after Delete
			}
		}
	})
	return dirs
}

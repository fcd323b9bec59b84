package task

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"

	"github.com/tupper/tupper/internal/testutil"
	"github.com/tupper/tupper/shim/container"
	_ "github.com/tupper/tupper/shim/nsenter"
)

func TestMain(m *testing.M) {
	container.MaybeInit()
	// What shim/serve does for a real shim: be a child subreaper (helpers
	// forked into a pid namespace come to it), reap every child on SIGCHLD
	// and hand the exits to the reaper's subscribers.
	if err := reaper.SetSubreaper(1); err != nil {
		fmt.Fprintln(os.Stderr, "child subreaper:", err)
		os.Exit(1)
	}
	ch := make(chan os.Signal, 32)
	signal.Notify(ch, syscall.SIGCHLD)
	go func() {
		for range ch {
			reaper.Reap()
		}
	}()
	os.Exit(m.Run())
}

type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Publish(ctx context.Context, topic string, e events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := topic
	switch e := e.(type) {
	case *eventstypes.TaskExit:
		s += fmt.Sprintf(" %s %d", e.ID, e.ExitStatus)
	case *eventstypes.TaskExecAdded:
		s += " " + e.ExecID
	case *eventstypes.TaskExecStarted:
		s += " " + e.ExecID
	}
	r.events = append(r.events, s)
	return nil
}

func (r *recorder) Close() error { return nil }

// waitFor polls the published events until done holds for them, for up
// to 10 s; it returns the last events seen and whether done held.
func (r *recorder) waitFor(done func([]string) bool) ([]string, bool) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		got := slices.Clone(r.events)
		r.mu.Unlock()
		if done(got) {
			return got, true
		}
		if time.Now().After(deadline) {
			return got, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *recorder) wait(t *testing.T, want []string) {
	t.Helper()
	if got, ok := r.waitFor(func(got []string) bool { return slices.Equal(got, want) }); !ok {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// waitCount waits until n events were published and returns them.
func (r *recorder) waitCount(t *testing.T, n int) []string {
	t.Helper()
	got, ok := r.waitFor(func(got []string) bool { return len(got) >= n })
	if !ok {
		t.Fatalf("%d events, want %d:\n%s", len(got), n, strings.Join(got, "\n"))
	}
	return got
}

func newService(t *testing.T) (*service, *recorder, context.Context) {
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testutil.Require(t, "needs /bin/busybox (busybox-static)")
	}
	ctx := namespaces.WithNamespace(context.Background(), "tupper-test")
	ctx, sd := shutdown.WithShutdown(ctx)
	t.Cleanup(sd.Shutdown)
	rec := &recorder{}
	s, err := NewTaskService(ctx, rec, sd)
	if err != nil {
		t.Fatal(err)
	}
	return s.(*service), rec, ctx
}

func newBundle(t *testing.T, args ...string) string {
	return newBundleHooks(t, nil, args...)
}

func newBundleHooks(t *testing.T, hooks *specs.Hooks, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
	bb, _ := os.ReadFile("/bin/busybox")
	os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755)
	for _, a := range []string{"sh", "sleep", "echo", "cat", "true"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", a))
	}
	spec := specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Args: args, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
		},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}}},
		Hooks: hooks,
	}
	b, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	return dir
}

// fifoReader makes a FIFO and collects what is written to it until EOF.
func fifoReader(t *testing.T) (string, func() string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "out")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		f, err := os.OpenFile(p, os.O_RDONLY, 0)
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(f)
		f.Close()
		done <- string(b)
	}()
	return p, func() string {
		select {
		case s := <-done:
			return s
		case <-time.After(10 * time.Second):
			return "timeout"
		}
	}
}

func TestLifecycleEvents(t *testing.T) {
	s, rec, ctx := newService(t)
	bundle := newBundle(t, "sh", "-c", "echo hello; exit 7")
	out, read := fifoReader(t)
	cr, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle, Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.State(ctx, &taskAPI.StateRequest{ID: "c1"})
	if err != nil || st.Status != task.Status_CREATED || st.Pid != cr.Pid {
		t.Fatalf("state %v %v", st, err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"})
	if err != nil || w.ExitStatus != 7 {
		t.Fatalf("wait %v %v", w, err)
	}
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "c1", Signal: 9}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Fatalf("kill after exit: %v", err)
	}
	d, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"})
	if err != nil || d.ExitStatus != 7 {
		t.Fatalf("delete %v %v", d, err)
	}
	if got := read(); got != "hello\n" {
		t.Fatalf("stdout %q", got)
	}
	rec.wait(t, []string{"/tasks/create", "/tasks/start", "/tasks/exit c1 7", "/tasks/delete"})
	if _, err := s.State(ctx, &taskAPI.StateRequest{ID: "c1"}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Fatalf("state after delete: %v", err)
	}
}

func TestExecAndKillAll(t *testing.T) {
	s, rec, ctx := newService(t)
	bundle := newBundle(t, "sleep", "100")
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c2", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c2"}); err != nil {
		t.Fatal(err)
	}
	spec, err := typeurl.MarshalAnyToProto(&specs.Process{Args: []string{"sh", "-c", "echo $$; exit 3"}, Env: []string{"PATH=/bin"}, Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	out, read := fifoReader(t)
	if _, err := s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c2", ExecID: "e1", Spec: spec, Stdout: out}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c2", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "c2", ExecID: "e1"})
	if err != nil || w.ExitStatus != 3 {
		t.Fatalf("exec wait %v %v", w, err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c2", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if got := read(); got == "1\n" || got == "" {
		t.Fatalf("exec pid line %q", got)
	}
	pids, err := s.Pids(ctx, &taskAPI.PidsRequest{ID: "c2"})
	if err != nil || len(pids.Processes) != 1 {
		t.Fatalf("pids %v %v", pids, err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c2"}); !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		t.Fatalf("delete running: %v", err)
	}
	if _, err := s.Pause(ctx, &taskAPI.PauseRequest{ID: "c2"}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Fatalf("pause: %v", err)
	}
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "c2", Signal: 9, All: true}); err != nil {
		t.Fatal(err)
	}
	w, err = s.Wait(ctx, &taskAPI.WaitRequest{ID: "c2"})
	if err != nil || w.ExitStatus != 137 {
		t.Fatalf("wait %v %v", w, err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c2"}); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, []string{"/tasks/create", "/tasks/start", "/tasks/exec-added e1", "/tasks/exec-started e1",
		"/tasks/exit e1 3", "/tasks/exit c2 137", "/tasks/delete"})
}

func TestDeleteCreated(t *testing.T) {
	s, rec, ctx := newService(t)
	bundle := newBundle(t, "sleep", "100")
	cr, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c3", Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c3"}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(int(cr.Pid), 0); err == nil {
		t.Fatalf("init %d still there", cr.Pid)
	}
	rec.wait(t, []string{"/tasks/create", "/tasks/exit c3 137", "/tasks/delete"})
}

func TestCreateInvalid(t *testing.T) {
	s, rec, ctx := newService(t)
	bundle := newBundle(t, "no-such-binary")
	_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c4", Bundle: bundle})
	if err == nil || !strings.Contains(err.Error(), `executable "no-such-binary" not found`) {
		t.Fatalf("create: %v", err)
	}
	if len(s.containers) != 0 {
		t.Fatal("container registered after failed create")
	}
	// No helper left behind: nothing of ours runs tupper-init any more.
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.HasPrefix(string(b), "tupper-init\x00c4") {
			t.Fatalf("helper %s left behind", e.Name())
		}
	}
	rec.wait(t, nil)
}

func TestPostHooks(t *testing.T) {
	s, _, ctx := newService(t)
	out := t.TempDir()
	hook := func(name string) []specs.Hook {
		return []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(out, name)}}}
	}
	bundle := newBundleHooks(t, &specs.Hooks{Poststart: hook("poststart"), Poststop: hook("poststop")}, "true")
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c5", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c5"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "poststart")); err != nil {
		t.Fatal("poststart did not run before Start returned")
	}
	s.Wait(ctx, &taskAPI.WaitRequest{ID: "c5"})
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c5"}); err != nil {
		t.Fatal(err)
	}
	for name, status := range map[string]specs.ContainerState{"poststart": specs.StateRunning, "poststop": specs.StateStopped} {
		var st specs.State
		b, _ := os.ReadFile(filepath.Join(out, name))
		if err := json.Unmarshal(b, &st); err != nil || st.ID != "c5" || st.Status != status {
			t.Errorf("%s got state %s (%v)", name, b, err)
		}
	}
}

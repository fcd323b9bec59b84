package serve

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/tupper/tupper/proto/taskapi"
	"google.golang.org/protobuf/proto"
)

// fakeManager records what the command line asked of it.
type fakeManager struct {
	started *bootapi.BootstrapParams
	stopped string
}

func (m *fakeManager) Name() string { return "io.containerd.test.v2" }

func (m *fakeManager) Start(ctx context.Context, p *bootapi.BootstrapParams) (*bootapi.BootstrapResult, error) {
	if ns, _ := namespaces.Namespace(ctx); ns != p.GetNamespace() {
		return nil, io.ErrUnexpectedEOF
	}
	m.started = p
	return &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: "unix:///run/test.sock"}, nil
}

func (m *fakeManager) Stop(ctx context.Context, id string) (StopStatus, error) {
	m.stopped = id
	return StopStatus{Pid: 42, ExitStatus: 137, ExitedAt: time.Unix(1700000000, 0)}, nil
}

func (m *fakeManager) Info(ctx context.Context, _ io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{Name: m.Name()}, nil
}

func runArgs(t *testing.T, m Manager, stdin []byte, args ...string) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), m, "v-test", nil, append([]string{"containerd-shim-test-v2"}, args...), bytes.NewReader(stdin), &out)
	return out.Bytes(), err
}

// containerd's start: flags, then bootstrap parameters on stdin; the
// address goes back on stdout.
func TestStartReadsBootstrapParams(t *testing.T) {
	params, err := proto.Marshal(&bootapi.BootstrapParams{InstanceID: "c1", Namespace: "ns1", ContainerdGrpcAddress: "/run/containerd.sock"})
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeManager{}
	out, err := runArgs(t, m, params, "-namespace", "ns1", "-id", "c1", "-address", "/run/containerd.sock", "-publish-binary", "/bin/containerd", "start")
	if err != nil {
		t.Fatal(err)
	}
	if m.started.GetContainerdGrpcAddress() != "/run/containerd.sock" {
		t.Errorf("manager got %v", m.started)
	}
	var res bootapi.BootstrapResult
	if err := proto.Unmarshal(out, &res); err != nil || res.GetAddress() != "unix:///run/test.sock" || res.GetVersion() != 3 {
		t.Errorf("stdout %v (%v)", &res, err)
	}
}

// Parameters for another container or namespace than the command line's
// are refused, naming both.
func TestStartRefusesMismatchedParams(t *testing.T) {
	params, _ := proto.Marshal(&bootapi.BootstrapParams{InstanceID: "other", Namespace: "ns1"})
	m := &fakeManager{}
	_, err := runArgs(t, m, params, "-namespace", "ns1", "-id", "c1", "start")
	if err == nil || !strings.Contains(err.Error(), `"other"`) || !strings.Contains(err.Error(), `"c1"`) {
		t.Fatalf("got %v", err)
	}
	if m.started != nil {
		t.Error("the manager started a shim")
	}
	if _, err := runArgs(t, m, nil, "-namespace", "ns1", "-id", "c1", "start"); err == nil || !strings.Contains(err.Error(), "no bootstrap parameters") {
		t.Errorf("empty stdin: %v", err)
	}
	if _, err := runArgs(t, m, []byte{0xff, 0xff}, "-namespace", "ns1", "-id", "c1", "start"); err == nil {
		t.Error("garbage on stdin accepted")
	}
}

func TestDeleteWritesExit(t *testing.T) {
	m := &fakeManager{}
	out, err := runArgs(t, m, nil, "-namespace", "ns1", "-id", "c1", "-bundle", "/run/b", "delete")
	if err != nil {
		t.Fatal(err)
	}
	var res taskapi.DeleteResponse
	if err := proto.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if m.stopped != "c1" || res.GetPid() != 42 || res.GetExitStatus() != 137 || res.GetExitedAt().AsTime().Unix() != 1700000000 {
		t.Errorf("stopped %q, reply %v", m.stopped, &res)
	}
}

func TestVersionInfoAndBadCommandLines(t *testing.T) {
	m := &fakeManager{}
	out, err := runArgs(t, m, nil, "-v")
	if err != nil || !strings.Contains(string(out), "Version:  v-test") {
		t.Errorf("-v: %q, %v", out, err)
	}
	out, err = runArgs(t, m, nil, "-info")
	var info types.RuntimeInfo
	if err != nil || proto.Unmarshal(out, &info) != nil || info.GetName() != m.Name() {
		t.Errorf("-info: %v, %v", &info, err)
	}
	if _, err := runArgs(t, m, nil, "-id", "c1", "start"); err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Errorf("no namespace: %v", err)
	}
	if _, err := runArgs(t, m, nil, "-namespace", "ns1", "frobnicate"); err == nil || !strings.Contains(err.Error(), "frobnicate") {
		t.Errorf("unknown action: %v", err)
	}
	if _, err := runArgs(t, m, nil, "-no-such-flag"); err == nil {
		t.Error("unknown flag accepted")
	}
}

func TestSocketAddress(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "ns1")
	a, err := SocketAddress(ctx, "/run/s", "/run/containerd.sock", "pod1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a, "unix:///run/s/") || len(a) != len("unix:///run/s/")+64 {
		t.Errorf("address %q", a)
	}
	same, _ := SocketAddress(ctx, "/run/s", "/run/containerd.sock", "pod1")
	other, _ := SocketAddress(namespaces.WithNamespace(ctx, "ns2"), "/run/s", "/run/containerd.sock", "pod1")
	if same != a || other == a {
		t.Errorf("pod1 in ns1: %q then %q; in ns2: %q", a, same, other)
	}
	if _, err := SocketAddress(context.Background(), "/run/s", "", "pod1"); err == nil {
		t.Error("no namespace accepted")
	}
	if _, err := SocketAddress(ctx, "/"+strings.Repeat("d", 60), "", "pod1"); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("too long: %v", err)
	}
}

func TestListenRemoveAndConnect(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	addr := "unix://" + filepath.Join(dir, "shim")
	l, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700, socketPath(addr): 0o600} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v, %v; want %v", path, st.Mode().Perm(), err, want)
		}
	}
	if !CanConnect(addr) {
		t.Error("cannot connect to a listening socket")
	}
	if _, err := Listen(addr); !AddrInUse(err) {
		t.Errorf("second Listen: %v, want address in use", err)
	}
	if err := RemoveSocket(addr); err != nil {
		t.Fatal(err)
	}
	if CanConnect(addr) {
		t.Error("connected to a removed socket")
	}
	for _, bad := range []string{"/run/s/shim", "vsock://3:1024", "@abstract"} {
		if _, err := Listen(bad); err == nil || !strings.Contains(err.Error(), "unix://") {
			t.Errorf("Listen(%q): %v", bad, err)
		}
		if err := RemoveSocket(bad); err == nil {
			t.Errorf("RemoveSocket(%q) accepted", bad)
		}
	}
}

func TestRemoveIfNotListening(t *testing.T) {
	dir := t.TempDir()
	addr := "unix://" + filepath.Join(dir, "shim")
	l, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := RemoveIfNotListening(addr); err != nil {
		t.Fatal(err)
	}
	if !CanConnect(addr) {
		t.Fatal("removed the socket of a listener")
	}
	// A killed shim: the file stays, nothing listens.
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(socketPath(addr)); err != nil {
		t.Fatalf("the closed listener's socket file is gone already: %v", err)
	}
	if err := RemoveIfNotListening(addr); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(socketPath(addr)); !os.IsNotExist(err) {
		t.Errorf("a socket nothing listens on was left: %v", err)
	}
	if err := RemoveIfNotListening(addr); err != nil {
		t.Errorf("no socket file: %v", err)
	}
	// Not a socket: left alone.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if err := RemoveIfNotListening("unix://" + file); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(file); err != nil {
		t.Errorf("removed a regular file: %v", err)
	}
	if err := RemoveIfNotListening("vsock://3:1024"); err == nil {
		t.Error("accepted a vsock address")
	}
}

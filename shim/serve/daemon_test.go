package serve

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The test binary is also a shim daemon serving echoService, when this
// variable names the file its shutdown callback writes.
const daemonEnv = "TUPPER_SERVE_TEST_DAEMON"

func TestMain(m *testing.M) {
	if done := os.Getenv(daemonEnv); done != "" {
		Main(&fakeManager{}, "v-test", func(ctx context.Context, pub Publisher, sd shutdown.Service) (Service, error) {
			sd.RegisterCallback(func(context.Context) error { return os.WriteFile(done, []byte("shut down"), 0o600) })
			return echoService{}, nil
		})
		return
	}
	os.Exit(m.Run())
}

// echoService answers tupper.test.Echo/Ping with an empty message.
type echoService struct{}

func (echoService) RegisterTTRPC(s *ttrpc.Server) error {
	s.RegisterService("tupper.test.Echo", &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"Ping": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			return &emptypb.Empty{}, unmarshal(&emptypb.Empty{})
		},
	}})
	return nil
}

// startDaemon runs the test binary as a daemon the way `start` runs the
// shim: in the bundle directory (which holds containerd's log fifo), the
// listening socket as fd 3. It returns the daemon, the socket path, the
// log's lines (closed at the daemon's exit) and the file the daemon
// writes when it has shut down.
func startDaemon(t *testing.T) (*exec.Cmd, string, chan string, string) {
	dir := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(dir, "log"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	l, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	// Closing our copy must not remove the file (as start exits without
	// closing its listener).
	l.SetUnlinkOnClose(false)
	defer l.Close()
	lf, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	done := filepath.Join(dir, "done")
	cmd := exec.Command(os.Args[0], "-namespace", "ns1", "-id", "c1", "-debug")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), daemonEnv+"="+done, "TTRPC_ADDRESS="+filepath.Join(dir, "containerd.sock"))
	cmd.ExtraFiles = []*os.File{lf}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// containerd opens the fifo's read end; this open returns once the
	// daemon opened its write end.
	r, err := os.OpenFile(filepath.Join(dir, "log"), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, sock, lines, done
}

// awaitLine reads log lines until one contains want.
func awaitLine(t *testing.T, lines chan string, want string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("log ended without %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q in the log within 30 s", want)
		}
	}
}

func ping(t *testing.T, sock string) error {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return client.Call(ctx, "tupper.test.Echo", "Ping", &emptypb.Empty{}, &emptypb.Empty{})
}

// The daemon serves on fd 3, runs its shutdown callbacks on SIGTERM and
// exits 0; a SIGUSR1 before that logs its goroutines and does not kill it.
func TestDaemonServesAndStopsOnSIGTERM(t *testing.T) {
	cmd, sock, lines, done := startDaemon(t)
	if err := ping(t, sock); err != nil {
		t.Fatalf("ping the daemon: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	awaitLine(t, lines, "goroutine stacks")
	if err := ping(t, sock); err != nil {
		t.Fatalf("ping after SIGUSR1: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("daemon exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon still running 30 s after SIGTERM")
	}
	if b, err := os.ReadFile(done); err != nil || string(b) != "shut down" {
		t.Errorf("shutdown callback: %q, %v", b, err)
	}
}

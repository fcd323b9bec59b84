package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tupper/tupper/internal/testutil"
)

// serve runs the daemon in-process until the returned stop is called, or the
// test ends.
func serve(t testing.TB, c config) (snapshots.Snapshotter, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, c) }()
	var (
		once    sync.Once
		stopErr error
		conn    *grpc.ClientConn
	)
	stop := func() error {
		once.Do(func() {
			if conn != nil {
				conn.Close()
			}
			cancel()
			stopErr = <-done
		})
		return stopErr
	}
	t.Cleanup(func() { stop() })
	for {
		if c, err := net.Dial("unix", c.Address); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("daemon exited at start: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	conn, err := grpc.NewClient("unix://"+c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "tupper"), stop
}

func testConfig(t testing.TB, root string) config {
	c := defaultConfig()
	c.Root = root
	c.Address = filepath.Join(t.TempDir(), "tupper.sock")
	return c
}

// TestSuiteOverGRPC runs containerd's conformance suite through the same
// gRPC proxy client containerd uses, against the daemon's server.
func TestSuiteOverGRPC(t *testing.T) {
	testutil.NeedRoot(t)
	testsuite.SnapshotterSuite(t, "tupper", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		undo, err := testutil.LoopbackBtrfs(128<<20, root)
		if err != nil {
			return nil, nil, err
		}
		sn, stop := serve(t, testConfig(t, root))
		return sn, func() error { return errors.Join(stop(), undo()) }, nil
	})
}

func TestDaemonLifecycle(t *testing.T) {
	root := testutil.NewBtrfs(t, 128<<20)
	c := testConfig(t, filepath.Join(root, "state"))
	c.MetricsAddress = "127.0.0.1:0"

	// A stale socket file from a killed daemon is taken over.
	stale, err := net.Listen("unix", c.Address)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	sn, stop := serve(t, c)
	ctx := context.Background()
	if _, err := sn.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	// Errors cross gRPC with their kind intact.
	if _, err := sn.Prepare(ctx, "a", ""); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("duplicate Prepare over gRPC: %v", err)
	}
	if err := sn.(snapshots.Cleaner).Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup over gRPC: %v", err)
	}

	// A second daemon on the same socket or the same root is refused.
	sameSocket := c
	sameSocket.Root = filepath.Join(root, "state2")
	if err := run(ctx, sameSocket); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second daemon on the same socket: %v", err)
	}
	other := c
	other.Address = filepath.Join(t.TempDir(), "other.sock")
	if err := run(ctx, other); !errdefs.IsUnavailable(err) {
		t.Fatalf("second daemon on the same root: %v", err)
	}

	if err := stop(); err != nil {
		t.Fatalf("clean shutdown: %v", err)
	}
	if _, err := os.Stat(c.Address); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after shutdown: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	root := testutil.NewBtrfs(t, 128<<20)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := testConfig(t, filepath.Join(root, "state"))
	c.MetricsAddress = addr
	sn, stop := serve(t, c)
	defer stop()
	if _, err := sn.Prepare(context.Background(), "a", ""); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Prepare"`,
		"tupper_snapshotter_usage_walks_total",
		"tupper_snapshotter_metadata_read_only 0",
		"tupper_snapshotter_metadata_journal_records 1",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestFlagsAndConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(file, []byte("root = \"/from/file\"\nlog_level = \"debug\"\nquota_mode = \"off\"\nremap_ids = false\n"), 0o644)
	o, err := parseFlags([]string{"--config", file, "--log-level", "warn"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Root != "/from/file" || o.LogLevel != "warn" || o.QuotaMode != "off" || o.RemapIDs || o.Address != defaultConfig().Address {
		t.Fatalf("flag over file over defaults broken: %+v", o.config)
	}
	if o, _ := parseFlags([]string{"--config", file, "--remap-ids"}); !o.RemapIDs {
		t.Fatal("--remap-ids does not win over remap_ids = false in the file")
	}

	os.WriteFile(file, []byte("root = \"/x\"\nroots = \"/typo\"\n"), 0o644)
	if _, err := parseFlags([]string{"--config", file}); err == nil || !strings.Contains(err.Error(), "roots") {
		t.Fatalf("unknown config key not named: %v", err)
	}
	if _, err := parseFlags([]string{"--bogus"}); err == nil {
		t.Fatal("unknown flag accepted")
	}
	c := defaultConfig()
	c.QuotaMode = "sometimes"
	if err := run(context.Background(), c); err == nil || !strings.Contains(err.Error(), "sometimes") {
		t.Fatalf("bad quota mode: %v", err)
	}
}

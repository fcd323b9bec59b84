package snapshotter

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// BenchmarkOps times the snapshot operations of make bench's "snapshot
// operations" rows without containerd: Prepare on a committed 5,000-file
// base layer, Commit after a 4 KiB write, View of the result, Remove. It
// reports the median of each operation per iteration, called directly
// ("direct") and through a gRPC proxy client on a unix socket, as
// containerd calls the daemon ("grpc"). For profiling and before/after
// comparisons of the snapshotter's own share; it asserts nothing about time.
//
//	go test -run '^$' -bench Ops -benchtime 30x ./snapshotter
func BenchmarkOps(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		s := newTestSnapshotterSize(b, 1<<30)
		benchOps(b, s, s)
	})
	b.Run("grpc", func(b *testing.B) {
		s := newTestSnapshotterSize(b, 1<<30)
		benchOps(b, s, grpcClient(b, s))
	})
}

// newTestSnapshotterSize is newTestSnapshotter on a btrfs of size bytes.
func newTestSnapshotterSize(t testing.TB, size int64) *Snapshotter {
	t.Helper()
	root := filepath.Join(newBtrfs(t, size), "root")
	s, err := NewSnapshotter(testContext(t), root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// grpcClient serves s on a unix socket and returns a proxy client of it.
func grpcClient(b *testing.B, s *Snapshotter) snapshots.Snapshotter {
	sock := filepath.Join(b.TempDir(), "sn.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(s))
	go rpc.Serve(l)
	b.Cleanup(rpc.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "tupper")
}

func benchOps(b *testing.B, s *Snapshotter, sn snapshots.Snapshotter) {
	ctx := context.Background()
	benchBase(b, s)
	var prep, commit, view, remove []time.Duration
	timed := func(acc *[]time.Duration, fn func() error) {
		t := time.Now()
		err := fn()
		*acc = append(*acc, time.Since(t))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a, c, v := fmt.Sprintf("op-%d-active", i), fmt.Sprintf("op-%d", i), fmt.Sprintf("op-%d-view", i)
		timed(&prep, func() error { _, err := sn.Prepare(ctx, a, "base"); return err })
		b.StopTimer()
		mounts, err := sn.Mounts(ctx, a)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mounts[0].Source, "op"), make([]byte, 4096), 0o644); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		timed(&commit, func() error { return sn.Commit(ctx, c, a) })
		timed(&view, func() error { _, err := sn.View(ctx, v, c); return err })
		if err := sn.Remove(ctx, v); err != nil {
			b.Fatal(err)
		}
		timed(&remove, func() error { return sn.Remove(ctx, c) })
	}
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"prepare", prep}, {"commit", commit}, {"view", view}, {"remove", remove}} {
		b.ReportMetric(medianMs(m.d), m.name+"-ms")
	}
}

// benchBase commits the base layer: 50 directories of 100 files of 1 KiB.
func benchBase(b *testing.B, s *Snapshotter) {
	ctx := context.Background()
	mounts, err := s.Prepare(ctx, "base-active", "")
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 1024)
	for d := 0; d < 50; d++ {
		dir := filepath.Join(mounts[0].Source, fmt.Sprintf("d%03d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := 0; f < 100; f++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", f)), data, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := s.Commit(ctx, "base", "base-active"); err != nil {
		b.Fatal(err)
	}
	if err := syncFilesystem(s.root); err != nil {
		b.Fatal(err)
	}
}

func medianMs(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}

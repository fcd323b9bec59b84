package snapshotter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The stress test runs the snapshotter as a gRPC server in a child process
// (as the daemon does), drives random operations at it, SIGKILLs it at
// random moments and restarts it. After every kill, metadata must name no
// missing subvolume; after every restart and Cleanup, metadata and
// subvolumes agree exactly and every committed layer still holds exactly
// what was written into it. Random kills seldom land in the microsecond
// windows that leave orphans; TestCrashRecovery kills at each of those
// windows deterministically.

const envServeRoot = "TUPPER_STRESS_SERVE_ROOT"

// stressOps is the number of operations: 300 in make test, more with
// TUPPER_STRESS_OPS (make stress runs 2000).
func stressOps() int {
	if n, err := strconv.Atoi(os.Getenv("TUPPER_STRESS_OPS")); err == nil && n > 0 {
		return n
	}
	return 300
}

// serveChild serves the snapshotter at root on root/../stress.sock until killed.
func serveChild(root string) {
	ctx := context.Background()
	s, err := NewSnapshotter(ctx, root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	sock := filepath.Join(filepath.Dir(root), "stress.sock")
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(s))
	rpc.Serve(l)
	os.Exit(0)
}

// layerFile is what a layer named name holds: its own file, whose content
// is derived from the name, so a check needs no record of what happened.
func layerFile(name string) (string, []byte) {
	sum := sha256.Sum256([]byte(name))
	return "layer-" + fmt.Sprintf("%x", sum[:8]), bytes.Repeat(sum[:], 1+int(sum[0])%64)
}

type stressServer struct {
	t    *testing.T
	root string
	cmd  *exec.Cmd
	sn   snapshots.Snapshotter
	conn *grpc.ClientConn
}

func (srv *stressServer) start() {
	t := srv.t
	srv.cmd = exec.Command(os.Args[0])
	srv.cmd.Env = append(os.Environ(), envServeRoot+"="+srv.root)
	srv.cmd.Stderr = os.Stderr
	if err := srv.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(filepath.Dir(srv.root), "stress.sock")
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if i > 500 {
			t.Fatal("stress server did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	srv.conn, srv.sn = conn, proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "tupper")
}

func (srv *stressServer) kill() {
	srv.cmd.Process.Kill()
	srv.cmd.Wait()
	srv.conn.Close()
}

func TestStressKilledDaemon(t *testing.T) {
	fsRoot := newBtrfs(t, 1<<30)
	srv := &stressServer{t: t, root: filepath.Join(fsRoot, "root")}
	srv.start()
	defer func() { srv.kill() }()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))

	ctx := context.Background()
	n, restarts, done, orphans := 0, 0, 0, 0
	for done < stressOps() {
		// Kill at a random moment while operations run.
		killAt := time.Now().Add(time.Duration(5+rng.Intn(60)) * time.Millisecond)
		for time.Now().Before(killAt) && done < stressOps() {
			n++
			if randomOp(ctx, srv.sn, rng, n) {
				done++
			}
		}
		srv.kill()
		restarts++
		orphans += checkAfterCrash(t, srv.root, restarts)
		srv.start()
		if err := srv.sn.(snapshots.Cleaner).Cleanup(ctx); err != nil {
			t.Fatalf("Cleanup after restart %d: %v", restarts, err)
		}
		checkAgreement(t, srv, restarts)
	}
	t.Logf("%d operations completed (%d tried) across %d SIGKILLs, which left %d orphaned subvolumes for Cleanup", done, n, restarts, orphans)
	if restarts < 5 {
		t.Fatalf("only %d kills: the test did not exercise crashes", restarts)
	}
}

// randomOp runs one random operation and reports whether it completed.
// Failures are expected around a kill, and for picks that break the rules
// (e.g. removing a parent); what matters is the state afterwards.
func randomOp(ctx context.Context, sn snapshots.Snapshotter, rng *rand.Rand, n int) bool {
	var committed, all []string
	sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindCommitted {
			committed = append(committed, info.Name)
		}
		all = append(all, info.Name)
		return nil
	})
	pick := func(list []string) string {
		if len(list) == 0 {
			return ""
		}
		return list[rng.Intn(len(list))]
	}
	var err error
	switch op := rng.Intn(10); {
	case op < 4: // a layer: prepare, write its file, commit
		key, name := fmt.Sprintf("active-%d", n), fmt.Sprintf("layer-%d", n)
		var mounts []mount.Mount
		if mounts, err = sn.Prepare(ctx, key, pick(committed)); err == nil {
			file, content := layerFile(name)
			if err = os.WriteFile(filepath.Join(mounts[0].Source, file), content, 0o644); err == nil {
				err = sn.Commit(ctx, name, key)
			}
		}
	case op < 6:
		_, err = sn.View(ctx, fmt.Sprintf("view-%d", n), pick(committed))
	case op < 7:
		_, err = sn.Prepare(ctx, fmt.Sprintf("container-%d", n), pick(committed))
	default:
		if k := pick(all); k != "" {
			err = sn.Remove(ctx, k)
		}
	}
	return err == nil
}

// checkAfterCrash looks at the root right after a kill, before any
// restart: metadata must never name a missing subvolume. It returns how
// many orphans the crash left (the next Cleanup's work).
func checkAfterCrash(t *testing.T, root string, restart int) int {
	t.Helper()
	s, err := NewSnapshotter(testContext(t), root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st := readState(t, s)
	if !subset(st.known, st.onDisk) {
		t.Fatalf("kill %d: metadata names a subvolume that does not exist: %+v", restart, st)
	}
	return len(st.onDisk) - len(st.known)
}

// checkAgreement stops the server, opens the root directly, checks that
// metadata and subvolumes agree exactly and that every committed layer
// holds its own file and its ancestors', intact, then serves again.
func checkAgreement(t *testing.T, srv *stressServer, restart int) {
	t.Helper()
	ctx := context.Background()
	srv.kill()
	defer srv.start()
	s, err := NewSnapshotter(testContext(t), srv.root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := readState(t, s); !st.consistent() {
		t.Fatalf("restart %d: metadata and subvolumes disagree after Cleanup: %+v", restart, st)
	}
	err = s.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		if info.Kind != snapshots.KindCommitted {
			return nil
		}
		dir := snapshotDir(t, s, info.Name)
		if ro, err := readOnly(dir); err != nil || !ro {
			return fmt.Errorf("layer %s: subvolume %s is not read-only after a restart (%v)", info.Name, dir, err)
		}
		for name := info.Name; name != ""; {
			file, want := layerFile(name)
			got, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil || !bytes.Equal(got, want) {
				return fmt.Errorf("layer %s: the file of %s is damaged: %v", info.Name, name, err)
			}
			parent, err := s.Stat(ctx, name)
			if err != nil {
				return err
			}
			name = parent.Parent
		}
		return nil
	})
	if err != nil {
		t.Fatalf("restart %d: %v", restart, err)
	}
}

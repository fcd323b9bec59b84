// Command proxy-btrfs serves containerd's built-in btrfs snapshotter as a
// proxy snapshotter, with the command line of containerd-tupper-snapshotter
// (--address, --root). It is a stand-in for developing and checking the
// integration harness and demo before, or independently of, tupper's own
// daemon:
//
//	go build -o _output/bin/proxy-btrfs ./hack/proxy-btrfs
//	TUPPER_BIN=$PWD/_output/bin/proxy-btrfs go test ./integration/
//
// It is not tupper and is never shipped.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/plugins/snapshots/btrfs"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "/run/containerd-tupper/tupper.sock", "unix socket to serve on")
	root := flag.String("root", "/var/lib/containerd-tupper", "snapshotter root, on btrfs")
	flag.String("log-level", "info", "ignored")
	flag.String("config", "", "ignored")
	flag.Parse()

	if err := run(*address, *root); err != nil {
		fmt.Fprintln(os.Stderr, "proxy-btrfs:", err)
		os.Exit(1)
	}
}

func run(address, root string) error {
	sn, err := btrfs.NewSnapshotter(root)
	if err != nil {
		return fmt.Errorf("btrfs snapshotter on %s: %w", root, err)
	}
	defer sn.Close()

	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return err
	}
	if err := os.Remove(address); err != nil && !os.IsNotExist(err) {
		return err
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	fmt.Fprintf(os.Stderr, "proxy-btrfs: serving %s on %s\n", root, address)
	return srv.Serve(l)
}

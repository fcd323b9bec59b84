// Command containerd-tupper-snapshotter serves tupper's btrfs snapshotter to
// containerd as a proxy plugin over a unix socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"github.com/coreos/go-systemd/v22/daemon"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/tupper/tupper/snapshotter"
	"github.com/tupper/tupper/version"
)

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "containerd-tupper-snapshotter:", err)
		os.Exit(2)
	}
	if o.version {
		fmt.Println("containerd-tupper-snapshotter", version.Version)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	defer stop()
	if err := run(ctx, o.config); err != nil {
		log.L.WithError(err).Error("containerd-tupper-snapshotter failed")
		os.Exit(1)
	}
}

// run serves until ctx is cancelled (SIGINT/SIGTERM) and then shuts down cleanly.
func run(ctx context.Context, c config) error {
	if err := log.SetLevel(c.LogLevel); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	quota, err := snapshotter.ParseQuotaMode(c.QuotaMode)
	if err != nil {
		return err
	}
	sn, err := snapshotter.NewSnapshotter(ctx, c.Root, snapshotter.WithQuotaMode(quota), snapshotter.WithRemapIDs(c.RemapIDs))
	if err != nil {
		return err
	}
	defer sn.Close()

	l, err := listen(c.Address)
	if err != nil {
		return err
	}
	defer os.Remove(c.Address)

	reg := prometheus.NewRegistry()
	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg.MustRegister(metrics, snapshotter.UsageWalksCollector())
	reg.MustRegister(sn.MetadataCollectors()...)
	rpc := grpc.NewServer(grpc.ChainUnaryInterceptor(metrics.UnaryServerInterceptor()))
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	metrics.InitializeMetrics(rpc)

	if c.MetricsAddress != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Addr: c.MetricsAddress, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				log.G(ctx).WithError(err).Error("metrics server stopped")
			}
		}()
		defer srv.Close()
	}

	served := make(chan error, 1)
	go func() { served <- rpc.Serve(l) }()
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.G(ctx).WithError(err).Warn("telling systemd we are ready failed")
	}
	log.G(ctx).WithFields(log.Fields{"address": c.Address, "root": c.Root, "quota": sn.QuotaMode(), "version": version.Version}).Info("serving")

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.G(ctx).Info("shutting down")
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	done := make(chan struct{})
	go func() { rpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		rpc.Stop()
	}
	return nil
}

// listen takes over a stale socket, but never one another server answers on.
func listen(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o711); err != nil {
		return nil, err
	}
	if conn, err := net.DialTimeout("unix", address, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("another server is already listening on %s", address)
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket: %w", err)
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return nil, err
	}
	return l, os.Chmod(address, 0o660)
}

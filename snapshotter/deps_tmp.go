package snapshotter

import (
	_ "github.com/containerd/btrfs/v2"
	_ "github.com/containerd/containerd/v2/core/snapshots/storage"
	_ "github.com/containerd/containerd/v2/core/snapshots/testsuite"
	_ "github.com/containerd/containerd/v2/contrib/snapshotservice"
	_ "github.com/containerd/continuity/testutil/loopback"
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/containerd/containerd/v2/pkg/shim"
	_ "github.com/containerd/containerd/v2/client"
)

package snapshotter

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/containerd/btrfs/v2"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/log"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// walkCount counts Usage calls that walked files, and syncCount the
// transaction commits made to refresh quota counters, for tests and metrics.
var walkCount, syncCount atomic.Int64

// usageSyncInterval bounds how often Usage commits a btrfs transaction to
// refresh quota counters on kernels without rsv_data. CRI asks for every
// container's usage in a burst every 10 s; one commit serves the burst.
const usageSyncInterval = time.Second

// Usage returns the space a snapshot adds on top of its parent. Committed
// snapshots report what was measured at commit; active ones read their quota
// group (O(1)), or walk their files when quotas are off.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id, path, parentPath string
		info                 snapshots.Info
		usage                snapshots.Usage
	)
	err := s.withTx(ctx, false, func(ctx context.Context, tx *bolt.Tx) error {
		var err error
		id, info, usage, err = storage.GetInfo(ctx, key)
		if err != nil || info.Kind != snapshots.KindActive {
			return err
		}
		if path, err = s.ownPath(tx, info.Kind, id); err != nil || info.Parent == "" {
			return err
		}
		parentID, _, _, err := storage.GetInfo(ctx, info.Parent)
		if err != nil {
			return err
		}
		parentPath, err = s.subvolumePath(tx, snapshots.KindCommitted, parentID, nil)
		return err
	})
	if err != nil || info.Kind != snapshots.KindActive {
		return usage, err
	}
	return s.activeUsage(ctx, id, path, parentPath)
}

// activeUsage measures the active snapshot id, whose subvolume is path, on
// top of its parent's subvolume parentPath ("" when it has no parent).
func (s *Snapshotter) activeUsage(ctx context.Context, id, path, parentPath string) (snapshots.Usage, error) {
	if s.quotaMode != "" && !s.quota.inconsistent() {
		subvol, err := btrfs.SubvolID(path)
		if err != nil {
			return snapshots.Usage{}, fmt.Errorf("usage of snapshot %s: %w", id, err)
		}
		size, current, err := s.quota.usage(subvol)
		if err == nil && !current {
			// No reservation counter: commit a transaction so that
			// exclusive includes what was written, then read again.
			s.refreshCounters(ctx)
			size, _, err = s.quota.usage(subvol)
		}
		if err == nil {
			return snapshots.Usage{Size: size}, nil
		}
		log.G(ctx).WithError(err).WithField("snapshot", id).Warn("reading quota group failed, walking files instead")
	} else {
		s.walkNotice.Do(func() {
			log.G(ctx).Warn("btrfs quotas are off or inconsistent: Usage walks every file of a snapshot")
		})
	}
	walkCount.Add(1)
	var (
		du  fs.Usage
		err error
	)
	if parentPath == "" {
		du, err = fs.DiskUsage(ctx, path)
	} else {
		du, err = fs.DiffUsage(ctx, parentPath, path)
	}
	return snapshots.Usage(du), err
}

// refreshCounters commits the btrfs transaction (quota counters are updated
// at commit) unless that was done within usageSyncInterval. Only kernels
// without the rsv_data counter need it.
func (s *Snapshotter) refreshCounters(ctx context.Context) {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if time.Since(s.lastSync) < usageSyncInterval {
		return
	}
	syncCount.Add(1)
	if err := syncFilesystem(s.root); err != nil {
		log.G(ctx).WithError(err).Warn("btrfs sync before reading quota counters failed")
	}
	s.lastSync = time.Now()
}

// UsageWalksCollector exports how often Usage had to walk files, which stays
// at zero while quotas work.
func UsageWalksCollector() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tupper_snapshotter_usage_walks_total",
		Help: "Usage calls answered by walking files instead of reading btrfs quota groups.",
	}, func() float64 { return float64(walkCount.Load()) })
}

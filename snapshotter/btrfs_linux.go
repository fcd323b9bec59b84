// Package snapshotter is tupper's btrfs snapshotter: every committed layer is a
// read-only btrfs subvolume and every container rootfs a writable snapshot of
// its parent. Metadata lives in containerd's bolt MetaStore; subvolumes are
// named by the MetaStore's numeric snapshot id, in a directory per kind:
// <root>/active/<id>, <root>/view/<id>, <root>/committed/<id>. A commit keeps
// the id and moves the subvolume from active/ to committed/.
//
// Every operation orders its steps so that a crash between any two of them
// leaves, at worst, a subvolume that metadata does not know; Cleanup removes
// those. Metadata never names a subvolume that does not exist.
package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/btrfs/v2"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Snapshotter implements snapshots.Snapshotter and snapshots.Cleaner on btrfs.
type Snapshotter struct {
	root string
	ms   *storage.MetaStore
	lock *os.File

	quota     quotaSysfs
	quotaMode string // kernel quota mode in use ("squota", "qgroup"), "" when Usage walks files
	remapIDs  bool   // see WithRemapIDs

	spares *spares // writable snapshots of busy parents, made ahead of time

	walkNotice sync.Once // log the tree-walk fallback once, not on every Usage call
	syncMu     sync.Mutex
	lastSync   time.Time

	// step is called between the steps of each operation. Tests use it to
	// crash the process at a chosen point; it is nil in production.
	step func(name string)
}

// Opt configures a Snapshotter.
type Opt func(*config)

type config struct {
	quota    QuotaMode
	remapIDs bool
}

// WithQuotaMode picks how Usage and max-size work (default QuotaAuto).
func WithQuotaMode(m QuotaMode) Opt { return func(c *config) { c.quota = m } }

// WithRemapIDs says whether containerd advertises the "remap-ids" capability
// for this snapshotter (default true). Then the mounts of a snapshot labelled
// with uid/gid mappings carry uidmap=/gidmap= options, and containerd makes
// an idmapped bind mount of the subvolume instead of chowning a copy. It
// must match the proxy plugin's capabilities in containerd's config: when
// containerd does the chown itself, the labels still arrive and must not be
// mapped a second time.
func WithRemapIDs(on bool) Opt { return func(c *config) { c.remapIDs = on } }

// walkCount counts Usage calls that walked files, and syncCount the
// transaction commits made to refresh quota counters, for tests and metrics.
var walkCount, syncCount atomic.Int64

// usageSyncInterval bounds how often Usage commits a btrfs transaction to
// refresh quota counters on kernels without rsv_data. CRI asks for every
// container's usage in a burst every 10 s; one commit serves the burst.
const usageSyncInterval = time.Second

// NewSnapshotter opens (or creates) a snapshotter rooted at root, which must be
// on btrfs. Only one Snapshotter may use a root at a time.
func NewSnapshotter(ctx context.Context, root string, opts ...Opt) (_ *Snapshotter, retErr error) {
	cfg := config{quota: QuotaAuto, remapIDs: true}
	for _, o := range opts {
		o(&cfg)
	}
	if _, err := ParseQuotaMode(string(cfg.quota)); err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := Supported(existingAncestor(root)); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	if err := privateRoot(root); err != nil {
		return nil, err
	}
	lock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			lock.Close()
		}
	}()
	for _, kind := range kindDirs {
		if err := os.MkdirAll(filepath.Join(root, kind), 0o700); err != nil {
			return nil, err
		}
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"), func(o *bolt.Options) error {
		o.Timeout = 5 * time.Second
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("opening snapshot metadata in %s: %w", root, err)
	}
	sp, err := newSpares(ctx, root)
	if err != nil {
		ms.Close()
		return nil, err
	}
	s := &Snapshotter{root: root, ms: ms, lock: lock, remapIDs: cfg.remapIDs, spares: sp}
	if err := s.setupQuota(ctx, cfg.quota); err != nil {
		ms.Close()
		return nil, err
	}
	s.ensureReserve(ctx)
	return s, nil
}

// lockRoot keeps a second snapshotter process off the same root.
func lockRoot(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("snapshotter root %s is in use by another tupper snapshotter: %w", root, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("locking %s: %w", root, err)
	}
	return f, nil
}

// setupQuota turns quotas on (when allowed) so that Usage is O(1) and max-size
// can be enforced. Whatever happens is said once in the log.
func (s *Snapshotter) setupQuota(ctx context.Context, want QuotaMode) error {
	if want == QuotaOff {
		log.G(ctx).Info("btrfs quotas disabled by configuration: Usage walks files and max-size is refused")
		return nil
	}
	uuid, err := filesystemUUID(s.root)
	if err != nil {
		return err
	}
	s.quota = quotaSysfs{dir: filepath.Join("/sys/fs/btrfs", uuid, "qgroups")}
	mode, err := s.quota.mode()
	if err != nil {
		return err
	}
	if mode == "" {
		var simpleErr, classicErr error
		if want == QuotaAuto || want == QuotaSimple {
			simpleErr = enableQuota(s.root, true)
		}
		if (want == QuotaAuto && simpleErr != nil) || want == QuotaClassic {
			classicErr = enableQuota(s.root, false)
		}
		if mode, err = s.quota.mode(); err != nil {
			return err
		}
		if mode == "" {
			err := errors.Join(simpleErr, classicErr)
			if want == QuotaSimple && !haveSimpleQuota() {
				return fmt.Errorf("enabling simple btrfs quotas on %s: this kernel has none (Linux 6.7 or later has them); use quota mode auto or classic: %w", s.root, err)
			}
			if want != QuotaAuto {
				return fmt.Errorf("enabling %s btrfs quotas on %s: %w", want, s.root, err)
			}
			log.G(ctx).WithError(err).Warn("btrfs quotas could not be enabled: Usage falls back to walking files and max-size is refused")
			return nil
		}
	}
	if (want == QuotaSimple && mode != "squota") || (want == QuotaClassic && mode != "qgroup") {
		return fmt.Errorf("btrfs on %s already runs quota mode %q, configuration asks for %s", s.root, mode, want)
	}
	s.quotaMode = mode
	log.G(ctx).WithField("mode", mode).Info("btrfs quotas on: Usage reads quota groups")
	return nil
}

// QuotaMode reports the kernel quota mode in use ("squota" or "qgroup"), or ""
// when Usage walks files.
func (s *Snapshotter) QuotaMode() string { return s.quotaMode }

// kindDirs names the directory that holds the subvolumes of each kind.
var kindDirs = map[snapshots.Kind]string{
	snapshots.KindActive:    "active",
	snapshots.KindView:      "view",
	snapshots.KindCommitted: "committed",
}

func (s *Snapshotter) path(kind snapshots.Kind, id string) string {
	return filepath.Join(s.root, kindDirs[kind], id)
}

func (s *Snapshotter) crashPoint(name string) {
	if s.step != nil {
		s.step(name)
	}
}

// Stat returns the info for an active or committed snapshot by key.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

// Update changes a snapshot's labels.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (_ snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		info, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	return info, err
}

// Walk calls fn for every snapshot that matches the filters. A store that
// never held a snapshot has no bucket yet; that is an empty walk, not
// NotFound (which only fn itself may return).
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	fnErr := false
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		err := storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			err := fn(ctx, info)
			fnErr = err != nil
			return err
		}, filters...)
		if errdefs.IsNotFound(err) && !fnErr {
			return nil
		}
		return err
	})
}

// Usage returns the space a snapshot adds on top of its parent. Committed
// snapshots report what was measured at commit; active ones read their quota
// group (O(1)), or walk their files when quotas are off.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id, parentID string
		info         snapshots.Info
		usage        snapshots.Usage
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		var err error
		id, info, usage, err = storage.GetInfo(ctx, key)
		if err != nil || info.Kind != snapshots.KindActive {
			return err
		}
		if info.Parent != "" {
			parentID, _, _, err = storage.GetInfo(ctx, info.Parent)
		}
		return err
	})
	if err != nil || info.Kind != snapshots.KindActive {
		return usage, err
	}
	return s.activeUsage(ctx, id, parentID)
}

func (s *Snapshotter) activeUsage(ctx context.Context, id, parentID string) (snapshots.Usage, error) {
	path := s.path(snapshots.KindActive, id)
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
	if parentID == "" {
		du, err = fs.DiskUsage(ctx, path)
	} else {
		du, err = fs.DiffUsage(ctx, s.path(snapshots.KindCommitted, parentID), path)
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

// Mounts returns the bind mount of a snapshot's subvolume.
func (s *Snapshotter) Mounts(ctx context.Context, key string) (mounts []mount.Mount, err error) {
	var (
		snap storage.Snapshot
		info snapshots.Info
	)
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		if snap, err = storage.GetSnapshot(ctx, key); err != nil {
			return err
		}
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mounts of snapshot %q: %w", key, err)
	}
	return s.mounts(snap, info.Labels), nil
}

// mounts are plain bind mounts of the subvolume path, not "subvolid=" device
// mounts, so that they also work inside user namespaces and need no device.
func (s *Snapshotter) mounts(snap storage.Snapshot, labels map[string]string) []mount.Mount {
	mode := "rw"
	if snap.Kind == snapshots.KindView {
		mode = "ro"
	}
	options := []string{"rbind", mode}
	if s.remapIDs {
		if v, ok := labels[snapshots.LabelSnapshotUIDMapping]; ok {
			options = append(options, "uidmap="+v)
		}
		if v, ok := labels[snapshots.LabelSnapshotGIDMapping]; ok {
			options = append(options, "gidmap="+v)
		}
	}
	return []mount.Mount{{Type: "bind", Source: s.path(snap.Kind, snap.ID), Options: options}}
}

// Prepare creates a writable snapshot of parent (or an empty one).
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindActive, key, parent, opts)
}

// View creates a read-only snapshot of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindView, key, parent, opts)
}

func (s *Snapshotter) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) ([]mount.Mount, error) {
	if err := validateKey("snapshot key", key); err != nil {
		return nil, err
	}
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return nil, err
		}
	}
	maxSize, err := parseMaxSize(base.Labels)
	if err != nil {
		return nil, err
	}
	if err := validateIDMapLabels(base.Labels); err != nil {
		return nil, err
	}
	if maxSize > 0 && kind == snapshots.KindActive && s.quotaMode == "" {
		return nil, fmt.Errorf("label %s needs btrfs quotas, which are off on %s: %w", LabelMaxSize, s.root, errdefs.ErrFailedPrecondition)
	}

	var snap storage.Snapshot
	err = s.subvolumeTx(ctx, "create", func(ctx context.Context) (created string, err error) {
		snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...)
		if err != nil {
			return "", fmt.Errorf("creating %s snapshot %q: %w", kind, key, err)
		}
		target := s.path(kind, snap.ID)
		// An id is handed out again after a crash rolled back its
		// transaction, so a subvolume may already sit at target; metadata
		// does not know it, so it is an orphan and safe to replace.
		if err := s.removeOrphan(ctx, target); err != nil {
			return "", err
		}
		switch {
		case len(snap.ParentIDs) == 0:
			err = btrfs.SubvolCreate(target)
		case kind == snapshots.KindActive:
			err = s.snapshotActive(ctx, target, snap.ParentIDs[0])
		default:
			err = btrfs.SubvolSnapshot(target, s.path(snapshots.KindCommitted, snap.ParentIDs[0]), true)
		}
		if err != nil {
			return "", fmt.Errorf("creating subvolume for snapshot %q: %w", key, err)
		}
		s.crashPoint("create:subvolume")
		if maxSize > 0 && kind == snapshots.KindActive {
			if err := s.setLimit(target, maxSize); err != nil {
				return target, fmt.Errorf("setting %s on snapshot %q: %w", LabelMaxSize, key, err)
			}
		}
		return target, nil
	})
	if err != nil {
		return nil, err
	}
	s.crashPoint("create:committed")
	if kind == snapshots.KindActive && len(snap.ParentIDs) > 0 {
		parent := snap.ParentIDs[0]
		s.spares.used(ctx, parent, s.path(snapshots.KindCommitted, parent), func(dst, src string) error {
			return btrfs.SubvolSnapshot(dst, src, false)
		})
	}
	return s.mounts(snap, base.Labels), nil
}

// snapshotActive makes target a writable snapshot of the committed snapshot
// parent: parent's spare renamed into place when one is ready (see spares),
// else a new snapshot.
func (s *Snapshotter) snapshotActive(ctx context.Context, target, parent string) error {
	if spare := s.spares.take(parent); spare != "" {
		if err := os.Rename(spare, target); err == nil {
			return nil
		}
		s.spares.deleteSpare(ctx, spare)
	}
	return btrfs.SubvolSnapshot(target, s.path(snapshots.KindCommitted, parent), false)
}

// subvolumeTx runs fn in a write transaction. fn returns the subvolume it
// made, also when it fails after making it; when fn or the commit fails,
// that subvolume is deleted again, so outside of a crash no subvolume exists
// that metadata does not name.
func (s *Snapshotter) subvolumeTx(ctx context.Context, op string, fn func(context.Context) (created string, err error)) error {
	ctx, tx, err := s.ms.TransactionContext(ctx, true)
	if err != nil {
		return err
	}
	created, err := fn(ctx)
	if err == nil {
		err = tx.Commit()
	} else {
		tx.Rollback()
	}
	if err != nil && created != "" {
		if derr := s.deleteSubvolume(created); derr != nil {
			log.G(ctx).WithError(derr).WithField("path", created).Warnf("could not remove subvolume of failed %s; Cleanup will", op)
		}
	}
	return err
}

func (s *Snapshotter) setLimit(path string, bytes uint64) error {
	subvol, err := btrfs.SubvolID(path)
	if err != nil {
		return err
	}
	return limitExclusive(path, subvol, bytes)
}

// Commit turns the active snapshot key into the read-only committed snapshot
// name: a read-only snapshot of the active subvolume, then the active one is deleted.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	if err := validateKey("snapshot name", name); err != nil {
		return err
	}
	var activePath string
	err := s.subvolumeTx(ctx, "commit", func(ctx context.Context) (string, error) {
		active, err := storage.GetSnapshot(ctx, key)
		if err != nil {
			return "", fmt.Errorf("committing %q: %w", key, err)
		}
		if active.Kind != snapshots.KindActive {
			return "", fmt.Errorf("committing %q: it is a %s snapshot, only active ones can be committed: %w", key, active.Kind, errdefs.ErrFailedPrecondition)
		}
		parentID := ""
		if len(active.ParentIDs) > 0 {
			parentID = active.ParentIDs[0]
		}
		// Measure before snapshotting: afterwards the two subvolumes share
		// every extent and neither owns any exclusively.
		usage, err := s.activeUsage(ctx, active.ID, parentID)
		if err != nil {
			return "", fmt.Errorf("measuring %q before commit: %w", key, err)
		}
		id, err := storage.CommitActive(ctx, key, name, usage, opts...)
		if err != nil {
			return "", fmt.Errorf("committing %q as %q: %w", key, name, err)
		}
		activePath = s.path(snapshots.KindActive, active.ID)
		target := s.path(snapshots.KindCommitted, id)
		if err := s.removeOrphan(ctx, target); err != nil {
			return "", err
		}
		if err := btrfs.SubvolSnapshot(target, activePath, true); err != nil {
			return "", fmt.Errorf("snapshotting %q read-only: %w", key, err)
		}
		s.crashPoint("commit:subvolume")
		return target, nil
	})
	if err != nil {
		return err
	}
	s.crashPoint("commit:committed")
	s.deleteUnreferenced(ctx, activePath)
	return nil
}

// Remove deletes a snapshot that has no children. Metadata goes first; the
// subvolume follows, and if that fails it is an orphan that Cleanup removes.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var (
		id   string
		kind snapshots.Kind
	)
	remove := func() error {
		return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
			var err error
			id, kind, err = storage.Remove(ctx, key)
			if err != nil {
				return fmt.Errorf("removing snapshot %q: %w", key, err)
			}
			return nil
		})
	}
	err := remove()
	if isNoSpace(err) && s.releaseReserve(ctx) {
		err = remove()
	}
	if err != nil {
		return err
	}
	s.crashPoint("remove:committed")
	if kind == snapshots.KindCommitted {
		s.spares.parentRemoved(ctx, id)
	}
	s.deleteUnreferenced(ctx, s.path(kind, id))
	s.ensureReserve(ctx)
	return nil
}

// deleteUnreferenced deletes a subvolume that metadata no longer names. A
// failure is logged, not returned: metadata is already consistent and the next
// Cleanup retries.
func (s *Snapshotter) deleteUnreferenced(ctx context.Context, path string) {
	if err := s.deleteSubvolume(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).WithField("path", path).Warn("subvolume left for Cleanup")
	}
}

// removeOrphan clears a path that metadata does not know before reusing it.
func (s *Snapshotter) removeOrphan(ctx context.Context, path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	log.G(ctx).WithField("path", path).Info("removing orphaned subvolume left by an interrupted operation")
	return s.deleteSubvolume(path)
}

// deleteSubvolume removes a subvolume, or a plain directory a crash left behind.
func (s *Snapshotter) deleteSubvolume(path string) error {
	if err := btrfs.IsSubvolume(path); err != nil {
		if _, serr := os.Lstat(path); serr != nil {
			return serr
		}
		return os.RemoveAll(path)
	}
	err := destroySubvolume(path)
	if errors.Is(err, unix.ENOTEMPTY) {
		// The container made subvolumes of its own inside; only then is
		// the walk for nested subvolumes worth its cost.
		err = btrfs.SubvolDelete(path)
	}
	return err
}

// Cleanup deletes every entry under <root>/{active,view,committed} that
// metadata does not know: leftovers of crashes and of deletions that failed.
// It holds a write transaction so no create or commit is half-way meanwhile.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		known, err := s.knownPaths(ctx)
		if err != nil {
			return err
		}
		var errs []error
		for _, dir := range kindDirs {
			entries, err := os.ReadDir(filepath.Join(s.root, dir))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, e := range entries {
				p := filepath.Join(s.root, dir, e.Name())
				if known[p] {
					continue
				}
				if err := s.deleteSubvolume(p); err != nil {
					errs = append(errs, fmt.Errorf("cleanup of %s: %w", p, err))
					continue
				}
				log.G(ctx).WithField("path", p).Info("cleaned up orphaned subvolume")
			}
		}
		return errors.Join(errs...)
	})
}

// knownPaths returns the subvolume path of every snapshot in metadata. It
// must run inside a transaction.
func (s *Snapshotter) knownPaths(ctx context.Context) (map[string]bool, error) {
	ids, err := storage.IDMap(ctx)
	if errdefs.IsNotFound(err) {
		return map[string]bool{}, nil // nothing was ever stored
	}
	if err != nil {
		return nil, err
	}
	known := make(map[string]bool, len(ids))
	for id, key := range ids {
		_, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("reading snapshot %q: %w", key, err)
		}
		known[s.path(info.Kind, id)] = true
	}
	return known, nil
}

// Close deletes the spares and releases the metadata store and the root lock.
func (s *Snapshotter) Close() error {
	s.spares.close(context.Background())
	err := s.ms.Close()
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	return err
}

// UsageWalksCollector exports how often Usage had to walk files, which stays
// at zero while quotas work.
func UsageWalksCollector() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tupper_snapshotter_usage_walks_total",
		Help: "Usage calls answered by walking files instead of reading btrfs quota groups.",
	}, func() float64 { return float64(walkCount.Load()) })
}

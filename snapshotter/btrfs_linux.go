// Package snapshotter is tupper's btrfs snapshotter: every committed layer is a
// read-only btrfs subvolume and every container rootfs a writable snapshot of
// its parent. Metadata lives in containerd's bolt MetaStore. Subvolumes are
// made as <root>/active/<id> or <root>/view/<id> (id: the MetaStore's
// numeric snapshot id), or ahead of time in <root>/spare/, and never move:
// metadata records where each snapshot's subvolume is (locations_linux.go).
// A commit keeps the id and the subvolume, which becomes read-only.
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
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Snapshotter implements snapshots.Snapshotter and snapshots.Cleaner on btrfs.
type Snapshotter struct {
	root string
	meta *metastore
	ms   *storage.MetaStore // meta's database, for reads
	lock *os.File

	quota     quotaSysfs
	quotaMode string // kernel quota mode in use ("squota", "qgroup"), "" when Usage walks files
	remapIDs  bool   // see WithRemapIDs

	spares *spares // writable snapshots of busy parents, made ahead of time
	sealer sealer  // marks committed subvolumes read-only after Commit

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
	meta, err := openMetastore(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("opening snapshot metadata in %s: %w", root, err)
	}
	ms := meta.ms
	sp, err := newSpares(root)
	if err != nil {
		meta.close()
		return nil, err
	}
	s := &Snapshotter{root: root, meta: meta, ms: ms, lock: lock, remapIDs: cfg.remapIDs, spares: sp}
	if err := s.setupQuota(ctx, cfg.quota); err != nil {
		meta.close()
		return nil, err
	}
	if err := s.recover(ctx); err != nil {
		meta.close()
		return nil, err
	}
	s.ensureReserve(ctx)
	return s, nil
}

// recover finishes what a crash or stop left: spares nobody took are
// deleted, and committed subvolumes not yet read-only are marked.
func (s *Snapshotter) recover(ctx context.Context) error {
	var known map[string]bool
	err := s.withTx(ctx, false, func(ctx context.Context, tx *bolt.Tx) (err error) {
		known, err = s.knownPaths(ctx, tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("reading snapshot metadata in %s: %w", s.root, err)
	}
	s.spares.deleteUnknown(ctx, known)
	return s.sealCommitted(ctx)
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
	if err := validateLabels(info.Labels); err != nil {
		return snapshots.Info{}, err
	}
	err = s.write(ctx, func(ctx context.Context, tx *bolt.Tx) (*journalRecord, error) {
		info, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		if err != nil {
			return nil, err
		}
		return &journalRecord{Op: opUpdate, Key: info.Name, Info: &info}, nil
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

// Mounts returns the bind mount of a snapshot's subvolume.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var (
		path string
		snap storage.Snapshot
		info snapshots.Info
	)
	err := s.withTx(ctx, false, func(ctx context.Context, tx *bolt.Tx) (err error) {
		if snap, err = storage.GetSnapshot(ctx, key); err != nil {
			return err
		}
		if _, info, _, err = storage.GetInfo(ctx, key); err != nil {
			return err
		}
		path, err = s.subvolumePath(tx, snap.Kind, snap.ID, snap.ParentIDs)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mounts of snapshot %q: %w", key, err)
	}
	return s.mounts(path, snap.Kind, info.Labels), nil
}

// mounts are plain bind mounts of the subvolume path, not "subvolid=" device
// mounts, so that they also work inside user namespaces and need no device.
func (s *Snapshotter) mounts(path string, kind snapshots.Kind, labels map[string]string) []mount.Mount {
	mode := "rw"
	if kind == snapshots.KindView {
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
	return []mount.Mount{{Type: "bind", Source: path, Options: options}}
}

// Close finishes marking committed subvolumes read-only, deletes the free
// spares and releases the metadata store and the root lock.
func (s *Snapshotter) Close() error {
	s.sealer.flush()
	s.spares.close(context.Background())
	s.meta.mu.Lock()
	err := s.meta.close()
	s.meta.mu.Unlock()
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	return err
}

package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containerd/btrfs/v2"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	bolt "go.etcd.io/bbolt"
)

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
	s.sealer.busy()
	base, err := requestedInfo(opts)
	if err != nil {
		return nil, err
	}
	maxSize, err := parseMaxSize(base.Labels)
	if err != nil {
		return nil, err
	}
	if err := validateIDMapLabels(base.Labels); err != nil {
		return nil, err
	}
	if err := validateLabels(base.Labels); err != nil {
		return nil, err
	}
	if maxSize > 0 && kind == snapshots.KindActive && s.quotaMode == "" {
		return nil, fmt.Errorf("label %s needs btrfs quotas, which are off on %s: %w", LabelMaxSize, s.root, errdefs.ErrFailedPrecondition)
	}

	var snap storage.Snapshot
	var path, parentPath string
	err = s.subvolumeTx(ctx, "create", func(ctx context.Context, tx *bolt.Tx) (rec *journalRecord, created string, err error) {
		snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...)
		if err != nil {
			return nil, "", fmt.Errorf("creating %s snapshot %q: %w", kind, key, err)
		}
		if len(snap.ParentIDs) > 0 {
			if parentPath, err = s.subvolumePath(tx, snapshots.KindCommitted, snap.ParentIDs[0], nil); err != nil {
				return nil, "", err
			}
		}
		var loc location
		loc, path, created, err = s.makeSubvolume(ctx, kind, snap, parentPath)
		if err != nil {
			return nil, created, fmt.Errorf("creating subvolume for snapshot %q: %w", key, err)
		}
		s.crashPoint("create:subvolume")
		if maxSize > 0 && kind == snapshots.KindActive {
			if err := s.setLimit(path, maxSize); err != nil {
				return nil, created, fmt.Errorf("setting %s on snapshot %q: %w", LabelMaxSize, key, err)
			}
		}
		if err := setLocation(tx, snap.ID, loc); err != nil {
			return nil, created, err
		}
		rec, err = s.createRecord(ctx, kind, key, parent, snap.ID, loc)
		return rec, created, err
	})
	if err != nil {
		return nil, err
	}
	s.crashPoint("create:committed")
	if kind == snapshots.KindActive && len(snap.ParentIDs) > 0 {
		s.spares.used(ctx, snap.ParentIDs[0], parentPath, func(dst, src string) error {
			return btrfs.SubvolSnapshot(dst, src, false)
		})
	}
	return s.mounts(path, kind, base.Labels), nil
}

// requestedInfo is what a call's options ask for (labels), applied to an
// empty Info as the MetaStore applies them.
func requestedInfo(opts []snapshots.Opt) (snapshots.Info, error) {
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return snapshots.Info{}, err
		}
	}
	return info, nil
}

// makeSubvolume gives a new snapshot its files and says where they are. A
// view of a committed snapshot shares its parent's subvolume: the parent
// never changes, so a read-only mount of it is the view, and no subvolume
// (no btrfs transaction commit) is needed. An active snapshot of a parent
// takes the parent's spare if there is one, and is a new writable snapshot
// of the parent otherwise. A snapshot without parent is a new empty
// subvolume.
func (s *Snapshotter) makeSubvolume(ctx context.Context, kind snapshots.Kind, snap storage.Snapshot, parentPath string) (loc location, path, made string, err error) {
	if kind == snapshots.KindView && parentPath != "" {
		return location{shared: true}, parentPath, "", nil
	}
	if kind == snapshots.KindActive && parentPath != "" {
		if spare := s.spares.take(snap.ParentIDs[0]); spare != "" {
			rel, err := s.rel(spare)
			return location{rel: rel}, spare, spare, err
		}
	}
	rel := filepath.Join(kindDirs[kind], snap.ID)
	target := filepath.Join(s.root, rel)
	// An id is handed out again after a crash rolled back its
	// transaction, so a subvolume may already sit at target; metadata
	// does not know it, so it is an orphan and safe to replace.
	if err := s.removeOrphan(ctx, target); err != nil {
		return location{}, "", "", err
	}
	if parentPath == "" {
		// A new subvolume is on disk only once a btrfs transaction
		// commits, and the journal's fsync of the metadata that names it does
		// not commit one (btrfs logs just the synced file). Commit it
		// first, so that not even a power loss leaves metadata naming a
		// subvolume that is not there. A snapshot commits by itself.
		if err = btrfs.SubvolCreate(target); err == nil {
			made = target
			err = commitTransaction(target)
		}
	} else {
		err = btrfs.SubvolSnapshot(target, parentPath, false)
	}
	if err != nil {
		return location{}, "", made, err
	}
	return location{rel: rel}, target, target, nil
}

// subvolumeTx runs fn as a write (see write). fn returns the subvolume it
// made, also when it fails after making it; when fn or the commit fails,
// that subvolume is deleted again, so outside of a crash no subvolume exists
// that metadata does not name.
func (s *Snapshotter) subvolumeTx(ctx context.Context, op string, fn func(context.Context, *bolt.Tx) (*journalRecord, string, error)) error {
	var created string
	err := s.write(ctx, func(ctx context.Context, tx *bolt.Tx) (rec *journalRecord, err error) {
		rec, created, err = fn(ctx, tx)
		return rec, err
	})
	var notDurable errNotDurable
	if err != nil && created != "" && !errors.As(err, &notDurable) {
		if derr := s.deleteSubvolume(created); derr != nil {
			log.G(ctx).WithError(derr).WithField("path", created).Warnf("could not remove subvolume of failed %s; Cleanup will", op)
		}
	}
	return err
}

// createRecord is the journal record of a Prepare or View.
func (s *Snapshotter) createRecord(ctx context.Context, kind snapshots.Kind, key, parent, id string, loc location) (*journalRecord, error) {
	_, info, _, err := storage.GetInfo(ctx, key)
	if err != nil {
		return nil, err
	}
	rec := &journalRecord{Op: opCreate, Kind: kind, Key: key, Parent: parent, ID: id, Info: &info}
	rec.setLocation(loc)
	return rec, nil
}

func (s *Snapshotter) setLimit(path string, bytes uint64) error {
	subvol, err := btrfs.SubvolID(path)
	if err != nil {
		return err
	}
	return limitExclusive(path, subvol, bytes)
}

// Commit turns the active snapshot key into the committed snapshot name. Its
// subvolume stays where it is and becomes the layer: Commit itself only
// changes metadata, and the sealer marks the subvolume read-only after the
// reply (see sealer).
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	if err := validateKey("snapshot name", name); err != nil {
		return err
	}
	base, err := requestedInfo(opts)
	if err != nil {
		return err
	}
	if err := validateLabels(base.Labels); err != nil {
		return err
	}
	var path string
	err = s.write(ctx, func(ctx context.Context, tx *bolt.Tx) (*journalRecord, error) {
		active, err := storage.GetSnapshot(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("committing %q: %w", key, err)
		}
		if active.Kind != snapshots.KindActive {
			return nil, fmt.Errorf("committing %q: it is a %s snapshot, only active ones can be committed: %w", key, active.Kind, errdefs.ErrFailedPrecondition)
		}
		if path, err = s.ownPath(tx, active.Kind, active.ID); err != nil {
			return nil, err
		}
		parentPath := ""
		if len(active.ParentIDs) > 0 {
			if parentPath, err = s.subvolumePath(tx, snapshots.KindCommitted, active.ParentIDs[0], nil); err != nil {
				return nil, err
			}
		}
		// Measured now, while no child shares the layer's extents.
		usage, err := s.activeUsage(ctx, active.ID, path, parentPath)
		if err != nil {
			return nil, fmt.Errorf("measuring %q before commit: %w", key, err)
		}
		id, err := storage.CommitActive(ctx, key, name, usage, opts...)
		if err != nil {
			return nil, fmt.Errorf("committing %q as %q: %w", key, name, err)
		}
		rel, err := s.rel(path)
		if err == nil {
			err = setLocation(tx, id, location{rel: rel})
		}
		s.crashPoint("commit:metadata")
		if err != nil {
			return nil, err
		}
		_, info, _, err := storage.GetInfo(ctx, name)
		return &journalRecord{Op: opCommit, Key: key, Name: name, ID: id, Info: &info, Usage: usage, Rel: rel}, err
	})
	if err != nil {
		return err
	}
	s.crashPoint("commit:committed")
	s.sealer.add(ctx, path)
	return nil
}

// Remove deletes a snapshot that has no children. Metadata goes first; the
// subvolume follows, and if that fails it is an orphan that Cleanup removes.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	s.sealer.busy()
	var (
		id, path string
		kind     snapshots.Kind
	)
	remove := func() error {
		return s.write(ctx, func(ctx context.Context, tx *bolt.Tx) (*journalRecord, error) {
			var (
				info snapshots.Info
				err  error
			)
			if id, info, _, err = storage.GetInfo(ctx, key); err == nil {
				kind = info.Kind
				path, err = s.ownPath(tx, kind, id)
			}
			if err == nil {
				_, _, err = storage.Remove(ctx, key)
			}
			if err == nil {
				err = forgetLocation(tx, id)
			}
			if err != nil {
				return nil, fmt.Errorf("removing snapshot %q: %w", key, err)
			}
			return &journalRecord{Op: opRemove, Key: key, ID: id}, nil
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
	if path != "" {
		s.deleteUnreferenced(ctx, path)
	}
	s.ensureReserve(ctx)
	return nil
}

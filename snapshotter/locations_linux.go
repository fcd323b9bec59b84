package snapshotter

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// Where a snapshot's files are. A subvolume never moves once made, so that
// no operation renames a subvolume: on btrfs that makes the next fsync in
// the same transaction (the metadata journal's) a full transaction commit.
// Commit marks the subvolume read-only where it is, a Prepare that takes a
// spare leaves it in spare/, and a view of a committed snapshot has no
// subvolume of its own (it is mounted read-only from its parent's, which
// nothing changes any more). Each snapshot's place is recorded in the
// metadata, in the same bolt transaction as the snapshot, in a bucket of
// tupper's own next to the MetaStore's:
//
//	tupper/subvolumes/<id> = path relative to the root, or "" for a view
//	                         that shares its parent's subvolume
//
// Snapshots made before this bucket existed have no entry; their subvolume
// is <kind dir>/<id> (kindDirs), where they were made and moved on commit.
var (
	bucketTupper     = []byte("tupper")
	bucketSubvolumes = []byte("subvolumes")
)

// location is where a snapshot's subvolume is: rel, relative to the root,
// or, when shared, its parent's.
type location struct {
	rel    string
	shared bool
}

// transaction is the MetaStore's transaction context with the bolt
// transaction under it. containerd's storage package keeps the *bolt.Tx
// in the context and returns it as the Transactor.
func (s *Snapshotter) transaction(ctx context.Context, writable bool) (context.Context, *bolt.Tx, error) {
	ctx, t, err := s.ms.TransactionContext(ctx, writable)
	if err != nil {
		return ctx, nil, err
	}
	tx, ok := t.(*bolt.Tx)
	if !ok {
		t.Rollback()
		return ctx, nil, fmt.Errorf("containerd's snapshot MetaStore returned a %T, not a bolt transaction", t)
	}
	return ctx, tx, nil
}

// withTx runs fn in a transaction and commits it if writable and fn
// succeeded, as MetaStore.WithTransaction does, with the bolt transaction.
func (s *Snapshotter) withTx(ctx context.Context, writable bool, fn func(context.Context, *bolt.Tx) error) error {
	ctx, tx, err := s.transaction(ctx, writable)
	if err != nil {
		return err
	}
	if err := fn(ctx, tx); err != nil || !writable {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// locate reads where snapshot id of kind keeps its files.
func locate(tx *bolt.Tx, kind snapshots.Kind, id string) (location, error) {
	if b := tx.Bucket(bucketTupper); b != nil {
		if sb := b.Bucket(bucketSubvolumes); sb != nil {
			if v := sb.Get([]byte(id)); v != nil {
				rel := string(v)
				if rel == "" {
					return location{shared: true}, nil
				}
				if !filepath.IsLocal(rel) {
					return location{}, fmt.Errorf("metadata of snapshot %s names subvolume %q outside the root", id, rel)
				}
				return location{rel: rel}, nil
			}
		}
	}
	return location{rel: filepath.Join(kindDirs[kind], id)}, nil
}

// setLocation records where snapshot id keeps its files.
func setLocation(tx *bolt.Tx, id string, loc location) error {
	b, err := tx.CreateBucketIfNotExists(bucketTupper)
	if err != nil {
		return err
	}
	sb, err := b.CreateBucketIfNotExists(bucketSubvolumes)
	if err != nil {
		return err
	}
	return sb.Put([]byte(id), []byte(loc.rel))
}

// forgetLocation drops the record of a removed snapshot.
func forgetLocation(tx *bolt.Tx, id string) error {
	if b := tx.Bucket(bucketTupper); b != nil {
		if sb := b.Bucket(bucketSubvolumes); sb != nil {
			return sb.Delete([]byte(id))
		}
	}
	return nil
}

// subvolumePath is the subvolume that holds the files of the snapshot id
// of kind; parentIDs are its parent chain (storage.Snapshot.ParentIDs), for
// a view that shares its parent's.
func (s *Snapshotter) subvolumePath(tx *bolt.Tx, kind snapshots.Kind, id string, parentIDs []string) (string, error) {
	loc, err := locate(tx, kind, id)
	if err != nil {
		return "", err
	}
	if !loc.shared {
		return filepath.Join(s.root, loc.rel), nil
	}
	if len(parentIDs) == 0 {
		return "", fmt.Errorf("view %s shares the subvolume of a parent it does not have: %w", id, errdefs.ErrFailedPrecondition)
	}
	return s.subvolumePath(tx, snapshots.KindCommitted, parentIDs[0], nil)
}

// ownPath is the subvolume snapshot id of kind owns, "" for a view that
// shares its parent's.
func (s *Snapshotter) ownPath(tx *bolt.Tx, kind snapshots.Kind, id string) (string, error) {
	loc, err := locate(tx, kind, id)
	if err != nil || loc.shared {
		return "", err
	}
	return filepath.Join(s.root, loc.rel), nil
}

// rel is path relative to the root, for a location record.
func (s *Snapshotter) rel(path string) (string, error) {
	return filepath.Rel(s.root, path)
}

// knownPaths returns the subvolume of every snapshot in metadata that has
// one of its own.
func (s *Snapshotter) knownPaths(ctx context.Context, tx *bolt.Tx) (map[string]bool, error) {
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
		p, err := s.ownPath(tx, info.Kind, id)
		if err != nil {
			return nil, err
		}
		if p != "" {
			known[p] = true
		}
	}
	return known, nil
}

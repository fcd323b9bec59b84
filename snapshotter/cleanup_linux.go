package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/btrfs/v2"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/log"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// subvolumeDirs are the directories subvolumes are made in.
func subvolumeDirs() []string {
	return []string{kindDirs[snapshots.KindActive], kindDirs[snapshots.KindView], kindDirs[snapshots.KindCommitted], spareDir}
}

// Cleanup deletes every entry under <root>/{active,view,committed,spare}
// that metadata does not know and that is not a free spare: leftovers of
// crashes and of deletions that failed. It holds a write transaction so no
// create or commit is half-way meanwhile, and rolls it back: it changes no
// metadata, and a commit would cost a journal record. First it marks the
// layers committed since the last quiet moment read-only (see sealer).
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	s.sealer.flush()
	// Also no write between its commit and its journal record: a Remove
	// there is not durable yet, and a crash would bring back the snapshot
	// whose subvolume Cleanup deleted.
	s.meta.mu.Lock()
	defer s.meta.mu.Unlock()
	s.crashPoint("cleanup:locked")
	ctx, tx, err := s.transaction(ctx, true)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return s.cleanup(ctx, tx)
}

func (s *Snapshotter) cleanup(ctx context.Context, tx *bolt.Tx) error {
	known, err := s.knownPaths(ctx, tx)
	if err != nil {
		return err
	}
	var errs []error
	for _, dir := range subvolumeDirs() {
		entries, err := os.ReadDir(filepath.Join(s.root, dir))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			p := filepath.Join(s.root, dir, e.Name())
			if known[p] || (dir == spareDir && s.spares.free(p)) {
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

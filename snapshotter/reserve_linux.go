package snapshotter

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// reserveSize is the space held back in <root>/reserve. On a full disk,
// metadata writes fail like any other write, and Remove, the one operation
// that frees space, would be stuck; giving up the reserve lets it commit.
const reserveSize = 16 << 20

func (s *Snapshotter) reservePath() string { return filepath.Join(s.root, reserveName) }

const reserveName = "reserve"

// ensureReserve (re)creates the reserve when there is comfortably more free
// space than it takes.
func (s *Snapshotter) ensureReserve(ctx context.Context) {
	p := s.reservePath()
	if st, err := os.Stat(p); err == nil && st.Size() == reserveSize {
		return
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(s.root, &fs); err != nil || uint64(fs.Bavail)*uint64(fs.Bsize) < 4*reserveSize {
		return
	}
	tmp := p + ".tmp"
	err := func() error {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		// Real extents, not a hole: fallocate reserves the space.
		if err := unix.Fallocate(int(f.Fd()), 0, 0, reserveSize); err != nil {
			return err
		}
		return f.Sync()
	}()
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		log.G(ctx).WithError(err).Warn("could not set aside the disk-full reserve")
	}
}

// releaseReserve gives up the reserve and commits, so that the space is
// free for the metadata write that just failed.
func (s *Snapshotter) releaseReserve(ctx context.Context) bool { return releaseReserve(ctx, s.root) }

// releaseReserve gives up root's reserve, also before a Snapshotter is
// open (its metadata needs room to open).
func releaseReserve(ctx context.Context, root string) bool {
	if err := os.Remove(filepath.Join(root, reserveName)); err != nil {
		return false
	}
	log.G(ctx).Warn("disk full: released the reserve so that snapshots can be removed")
	syncFilesystem(root)
	return true
}

func isNoSpace(err error) bool { return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) }

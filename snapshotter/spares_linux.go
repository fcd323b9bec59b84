package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/containerd/btrfs/v2"
	"github.com/containerd/log"
)

// spareDir holds writable snapshots made ahead of time (see spares). It is
// not one of kindDirs: metadata never names what is in it.
const spareDir = "spare"

// spares keeps one writable snapshot, made ahead of time, of each committed
// snapshot that active snapshots keep being made from: an image's top
// layer, once a second container of that image was made. Making a btrfs
// snapshot commits a transaction (most of an active Prepare's time);
// renaming a spare into place does not. A parent earns a spare only on its
// second active child, so unpacking (each layer is a parent once) makes
// none. Spares live in memory: a spare on disk that is not in ready (after
// a crash, or being made) is deleted at start and by Close.
type spares struct {
	dir string
	seq atomic.Uint64

	mu      sync.Mutex
	closed  bool
	uses    map[string]int    // parent id: active snapshots made from it
	ready   map[string]string // parent id: its spare
	making  map[string]bool   // parent id: a spare is being made
	removed map[string]bool   // parent id: removed while its spare was being made
	wg      sync.WaitGroup
}

func newSpares(ctx context.Context, root string) (*spares, error) {
	dir := filepath.Join(root, spareDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &spares{dir: dir, uses: map[string]int{}, ready: map[string]string{}, making: map[string]bool{}, removed: map[string]bool{}}
	p.deleteAll(ctx)
	return p, nil
}

// take hands out parent's spare, if one is ready; the caller renames it
// into place (or deletes it).
func (p *spares) take(parent string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	path := p.ready[parent]
	delete(p.ready, parent)
	return path
}

// used records an active snapshot made from parent and, from the second
// one on, starts making the next spare of committed (parent's subvolume)
// with snapshot.
func (p *spares) used(ctx context.Context, parent, committed string, snapshot func(dst, src string) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.uses[parent]++
	if p.closed || p.uses[parent] < 2 || p.ready[parent] != "" || p.making[parent] {
		return
	}
	p.making[parent] = true
	delete(p.removed, parent)
	path := filepath.Join(p.dir, fmt.Sprintf("%s.%d", parent, p.seq.Add(1)))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := snapshot(path, committed)
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.making, parent)
		if err != nil {
			log.G(ctx).WithError(err).WithField("parent", parent).Debug("spare snapshot not made")
			return
		}
		if p.closed || p.removed[parent] {
			delete(p.removed, parent)
			p.deleteSpare(ctx, path)
			return
		}
		p.ready[parent] = path
	}()
}

// parentRemoved forgets a removed committed snapshot and deletes its spare.
func (p *spares) parentRemoved(ctx context.Context, parent string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.uses, parent)
	if p.making[parent] {
		p.removed[parent] = true
	}
	if path := p.ready[parent]; path != "" {
		delete(p.ready, parent)
		p.deleteSpare(ctx, path)
	}
}

// close waits for spares being made and deletes every spare.
func (p *spares) close(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
	p.deleteAll(ctx)
}

func (p *spares) deleteAll(ctx context.Context) {
	entries, _ := os.ReadDir(p.dir)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range entries {
		p.deleteSpare(ctx, filepath.Join(p.dir, e.Name()))
	}
	p.ready = map[string]string{}
}

func (p *spares) deleteSpare(ctx context.Context, path string) {
	err := destroySubvolume(path)
	if err != nil && btrfs.IsSubvolume(path) != nil {
		err = os.RemoveAll(path) // a directory a crash left half-made
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).WithField("path", path).Warn("deleting spare snapshot")
	}
}

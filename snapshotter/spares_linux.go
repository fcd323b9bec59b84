package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/btrfs/v2"
	"github.com/containerd/log"
)

// spareDir holds writable snapshots made ahead of time (see spares), and
// the active snapshots that took one: a taken spare stays where it is.
const spareDir = "spare"

// spareDelay is how long after a Prepare its parent's next spare is
// started: longer than the caller takes to finish with the reply.
const spareDelay = 30 * time.Millisecond

// spares keeps one writable snapshot, made ahead of time, of each committed
// snapshot that active snapshots keep being made from: an image's top
// layer, once a second container of that image was made. Making a btrfs
// snapshot commits a transaction (most of an active Prepare's time);
// taking a spare only records it in metadata. A parent earns a spare only
// on its second active child, so unpacking (each layer is a parent once)
// makes none. Which spares are free lives in memory: at start, everything
// in spare/ that metadata does not name is deleted, and Close deletes the
// free ones.
//
// A spare is made spareDelay after the Prepare that asked for it, not
// right away: its transaction commit would otherwise land on the caller's
// own work on that Prepare (containerd commits its metadata right after
// the reply, and that commit waited for ours). A Prepare that comes before
// the spare is started makes its own snapshot and leaves the spare for
// later.
type spares struct {
	dir   string
	nonce string // spare names from an earlier run must not come back
	seq   uint64
	delay time.Duration // spareDelay

	mu      sync.Mutex
	changed *sync.Cond // a spare was made or given up
	closed  bool
	uses    map[string]int         // parent id: active snapshots made from it
	pending map[string]*time.Timer // parent id: the spare to be made after spareDelay
	ready   map[string]string      // parent id: its spare
	making  map[string]string      // parent id: the spare being made
	removed map[string]bool        // parent id: removed while its spare was being made
	wg      sync.WaitGroup
}

func newSpares(root string) (*spares, error) {
	dir := filepath.Join(root, spareDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &spares{
		dir:     dir,
		nonce:   fmt.Sprintf("%x", time.Now().UnixNano()),
		delay:   spareDelay,
		uses:    map[string]int{},
		pending: map[string]*time.Timer{},
		ready:   map[string]string{},
		making:  map[string]string{},
		removed: map[string]bool{},
	}
	p.changed = sync.NewCond(&p.mu)
	return p, nil
}

// take hands out parent's spare, waiting for one being made, or returns "".
// The caller records it as its snapshot's subvolume (or deletes it).
func (p *spares) take(parent string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancelLocked(parent) // not started: quicker to make our own
	for p.making[parent] != "" {
		p.changed.Wait()
	}
	path := p.ready[parent]
	delete(p.ready, parent)
	return path
}

// free reports whether path is a spare that is free or being made, which
// Cleanup must leave alone.
func (p *spares) free(path string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range []map[string]string{p.ready, p.making} {
		for _, sp := range m {
			if sp == path {
				return true
			}
		}
	}
	return false
}

// used records an active snapshot made from parent and, from the second
// one on, has the next spare of committed (parent's subvolume) made with
// snapshot, spareDelay later.
func (p *spares) used(ctx context.Context, parent, committed string, snapshot func(dst, src string) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.uses[parent]++
	if p.closed || p.uses[parent] < 2 || p.ready[parent] != "" || p.making[parent] != "" || p.pending[parent] != nil {
		return
	}
	p.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(p.delay, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.pending[parent] != t {
			p.wg.Done() // cancelled after the timer fired
			return
		}
		delete(p.pending, parent)
		p.makeLocked(ctx, parent, committed, snapshot)
	})
	p.pending[parent] = t
}

// cancelLocked gives up parent's spare if it is not started yet.
func (p *spares) cancelLocked(parent string) {
	t := p.pending[parent]
	if t == nil {
		return
	}
	delete(p.pending, parent)
	p.changed.Broadcast()
	if t.Stop() {
		p.wg.Done() // its function will not run
	}
}

// makeLocked starts making parent's spare; p.wg counts it already. Not
// after close: close cancels every pending spare under the same lock.
func (p *spares) makeLocked(ctx context.Context, parent, committed string, snapshot func(dst, src string) error) {
	p.seq++
	path := filepath.Join(p.dir, fmt.Sprintf("%s.%s.%d", parent, p.nonce, p.seq))
	p.making[parent] = path
	delete(p.removed, parent)
	go func() {
		defer p.wg.Done()
		err := snapshot(path, committed)
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.making, parent)
		p.changed.Broadcast()
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
	p.cancelLocked(parent)
	if p.making[parent] != "" {
		p.removed[parent] = true
	}
	if path := p.ready[parent]; path != "" {
		delete(p.ready, parent)
		p.deleteSpare(ctx, path)
	}
}

// close waits for spares being made and deletes the free ones.
func (p *spares) close(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	for parent := range p.pending {
		p.cancelLocked(parent)
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for parent, path := range p.ready {
		p.deleteSpare(ctx, path)
		delete(p.ready, parent)
	}
}

// deleteUnknown deletes what a crash or an earlier run left in spare/:
// everything that is not a snapshot's subvolume in known.
func (p *spares) deleteUnknown(ctx context.Context, known map[string]bool) {
	entries, _ := os.ReadDir(p.dir)
	for _, e := range entries {
		if path := filepath.Join(p.dir, e.Name()); !known[path] {
			p.deleteSpare(ctx, path)
		}
	}
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

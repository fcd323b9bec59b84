package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	bolt "go.etcd.io/bbolt"
)

// sealer marks committed subvolumes read-only after Commit has returned.
// Commit only changes metadata: the subvolume becomes a committed layer
// where it is. Marking it read-only commits a btrfs transaction, which
// would be most of Commit's time, and nothing waits for it: a committed
// snapshot is only ever mounted read-only (views) or snapshotted
// (children), neither of which needs the flag. The flag guards the layer
// against writes through a mount of the active snapshot that someone kept
// past Commit. The sealer waits for a quiet moment (sealQuiet without a
// snapshot being made, committed or removed), so that its transaction
// commits do not hold up the fsyncs of the operations of a burst (an
// unpack, a batch of containers); Cleanup, containerd's maintenance call,
// and Close seal at once. A crash before the flag is set is rolled forward
// at start (sealCommitted).
type sealer struct {
	mu      sync.Mutex
	pending []string
	timer   *time.Timer
	running bool
	done    *sync.Cond      // running went false
	ctx     context.Context // for logging
}

// sealQuiet is how long the snapshotter must have been idle before the
// sealer runs.
const sealQuiet = time.Second

// add queues path to be marked read-only once things are quiet.
func (z *sealer) add(ctx context.Context, path string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.ctx = context.WithoutCancel(ctx)
	z.pending = append(z.pending, path)
	z.postpone()
}

// busy says an operation is under way: pending seals wait some more.
func (z *sealer) busy() {
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(z.pending) > 0 {
		z.postpone()
	}
}

func (z *sealer) postpone() {
	if z.timer == nil {
		z.timer = time.AfterFunc(sealQuiet, z.start)
		return
	}
	z.timer.Reset(sealQuiet)
}

// start runs the queue unless it is running.
func (z *sealer) start() {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.startLocked()
}

func (z *sealer) startLocked() {
	if z.running || len(z.pending) == 0 {
		return
	}
	z.running = true
	go z.run()
}

func (z *sealer) run() {
	for {
		z.mu.Lock()
		if len(z.pending) == 0 {
			z.running = false
			if z.done != nil {
				z.done.Broadcast()
			}
			z.mu.Unlock()
			return
		}
		path, ctx := z.pending[0], z.ctx
		z.pending = z.pending[1:]
		z.mu.Unlock()
		// A layer removed right after its commit is gone: nothing to do.
		if err := setReadOnly(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.G(ctx).WithError(err).WithField("path", path).Warn("marking a committed subvolume read-only failed; the next start retries")
		}
	}
}

// flush seals everything queued now and returns when it is done.
func (z *sealer) flush() {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.timer != nil {
		z.timer.Stop()
	}
	if z.done == nil {
		z.done = sync.NewCond(&z.mu)
	}
	z.startLocked()
	for z.running {
		z.done.Wait()
	}
}

// sealCommitted marks read-only every committed snapshot's subvolume that
// is not yet: those whose Commit was cut short by a crash before the
// sealer got to them. A subvolume it cannot mark is logged, not fatal.
func (s *Snapshotter) sealCommitted(ctx context.Context) error {
	var paths []string
	err := s.withTx(ctx, false, func(ctx context.Context, tx *bolt.Tx) error {
		err := storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			if info.Kind != snapshots.KindCommitted {
				return nil
			}
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			p, err := s.ownPath(tx, info.Kind, id)
			if err == nil && p != "" {
				paths = append(paths, p)
			}
			return err
		})
		if errdefs.IsNotFound(err) {
			return nil // nothing was ever stored
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("listing committed snapshots: %w", err)
	}
	for _, p := range paths {
		ro, err := readOnly(p)
		if err == nil && !ro {
			log.G(ctx).WithField("path", p).Info("marking a committed subvolume read-only (its commit was interrupted)")
			err = setReadOnly(p)
		}
		if err != nil {
			log.G(ctx).WithError(err).WithField("path", p).Warn("cannot mark a committed subvolume read-only")
		}
	}
	return nil
}

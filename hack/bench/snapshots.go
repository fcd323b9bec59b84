package main

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

const (
	// The committed layer that the operations and Usage benchmarks stack
	// on: a small image's worth of files (the built-in btrfs snapshotter's
	// Commit walks parent and child, so the parent's size matters).
	baseKey      = "bench-base"
	baseDirs     = 50
	baseFiles    = 100 // per directory: 5,000 files
	baseFileSize = 1024

	// opsPerRound is how many Prepare/Commit/View/Remove cycles every
	// snapshotter does per round of the operations benchmark.
	opsPerRound = 5

	// The Usage benchmark's container writes usageDirs*usageFiles files.
	usageDirs     = 100
	usageFiles    = 200 // per directory: 20,000 files
	usageFileSize = 4096
	// usageCallsPerRound Usage calls per snapshotter and round.
	usageCallsPerRound = 3
)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// mountAt mounts a snapshot's mounts on a fresh directory below work.
func (b *bench) mountAt(name string, mounts []mount.Mount) (string, error) {
	dir, err := os.MkdirTemp(b.work, name+"-")
	if err != nil {
		return "", err
	}
	if err := mount.All(mounts, dir); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("mounting %v: %w", mounts, err)
	}
	return dir, nil
}

// unmount undoes mountAt.
func unmount(dir string) error {
	if err := mount.UnmountAll(dir, 0); err != nil {
		return err
	}
	return os.Remove(dir)
}

// withMounts mounts a snapshot's mounts, runs fn on them and unmounts.
func (b *bench) withMounts(name string, mounts []mount.Mount, fn func(root string) error) (err error) {
	dir, err := b.mountAt(name, mounts)
	if err != nil {
		return err
	}
	defer func() {
		if uerr := unmount(dir); uerr != nil && err == nil {
			err = uerr
		}
	}()
	return fn(dir)
}

// writeFiles writes dirs×files files of size bytes under root/name.
func writeFiles(root, name string, dirs, files, size int) error {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(root, name, fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for f := 0; f < files; f++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", f)), data, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureBase commits the base layer in every snapshotter, once.
func (b *bench) ensureBase() error {
	for _, name := range b.snapshotters {
		sn := b.client.SnapshotService(name)
		if _, err := sn.Stat(b.ctx, baseKey); err == nil {
			continue
		}
		active := baseKey + "-active"
		mounts, err := sn.Prepare(b.ctx, active, "")
		if err != nil {
			return fmt.Errorf("%s: prepare base: %w", name, err)
		}
		if err := b.withMounts(name, mounts, func(root string) error {
			return writeFiles(root, "base", baseDirs, baseFiles, baseFileSize)
		}); err != nil {
			return fmt.Errorf("%s: writing base: %w", name, err)
		}
		if err := sn.Commit(b.ctx, baseKey, active); err != nil {
			return fmt.Errorf("%s: commit base: %w", name, err)
		}
	}
	unix.Sync()
	return nil
}

// snapshotOps times Prepare, Commit, View and Remove through containerd's
// snapshot service, stacked on the base layer.
func (b *bench) snapshotOps() ([]*Result, error) {
	if err := b.ensureBase(); err != nil {
		return nil, err
	}
	const group = "snapshot operations"
	prep := newResult(group, "Prepare", "ms", b.snapshotters)
	commit := newResult(group, "Commit", "ms", b.snapshotters)
	view := newResult(group, "View", "ms", b.snapshotters)
	remove := newResult(group, "Remove", "ms", b.snapshotters)
	// Issue 18: snapshot operations at overlayfs speed.
	prep.Target = &Target{Baseline: "overlayfs", MaxRatio: 1.0, Text: "≤ 1.0× overlayfs"}
	view.Target = &Target{Baseline: "overlayfs", MaxRatio: 1.0, Text: "≤ 1.0× overlayfs"}
	commit.Target = &Target{Baseline: "overlayfs", MaxRatio: 1.5, Text: "≤ 1.5× overlayfs"}
	prep.Note = fmt.Sprintf("an active snapshot of a committed %s-file base layer, through containerd's snapshot service (gRPC to containerd; for tupper, containerd then calls the daemon)", thousands(baseDirs*baseFiles))
	commit.Note = "that snapshot after one 4 KiB file was written into it (the write and the mounts are not timed)"
	view.Note = "a read-only view of the committed snapshot"
	remove.Note = "the committed snapshot (its view removed before, untimed), including the garbage collection that deletes it in the snapshotter: containerd's Remove only drops its own record, so the driver runs a synchronous GC (a lease deleted with SynchronousDelete) and times both"

	before, metricsErr := b.daemonTimes()
	seq := 0
	rows := opRows{prep, commit, view, remove}
	err := interleave(b.runs*opsPerRound, b.snapshotters, func(round int, name string) error {
		seq++
		return b.opCycle(name, seq, rows)
	})
	if err != nil {
		return nil, err
	}
	// Where tupper's time goes: the daemon's own handling time (from its
	// /metrics) against the whole call through containerd.
	if after, err := b.daemonTimes(); metricsErr == nil && err == nil {
		for _, r := range []*Result{prep, commit, view, remove} {
			if mean, ok := after.since(before, r.Metric); ok {
				r.Note += fmt.Sprintf("; tupper's daemon itself spent %.2f ms on average handling %s (gRPC server time from its /metrics, %s)", mean, r.Metric, "the rest is containerd, its metadata and the gRPC hop")
			}
		}
	}
	return []*Result{prep, commit, view, remove}, nil
}

// opRows are snapshotOps' results.
type opRows struct{ prep, commit, view, remove *Result }

// opCycle runs one round of snapshotOps on snapshotter name: Prepare,
// a write, Commit, View, and Remove with its garbage collection, timing
// each into r.
func (b *bench) opCycle(name string, seq int, r opRows) error {
	sn := b.client.SnapshotService(name)
	a, c, v := fmt.Sprintf("bench-op-%d-active", seq), fmt.Sprintf("bench-op-%d", seq), fmt.Sprintf("bench-op-%d-view", seq)

	t := time.Now()
	mounts, err := sn.Prepare(b.ctx, a, baseKey)
	r.prep.add(name, ms(time.Since(t)))
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	if err := b.withMounts(name, mounts, func(root string) error {
		return writeFiles(root, "op", 1, 1, 4096)
	}); err != nil {
		return err
	}

	t = time.Now()
	err = sn.Commit(b.ctx, c, a)
	r.commit.add(name, ms(time.Since(t)))
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}

	t = time.Now()
	_, err = sn.View(b.ctx, v, c)
	r.view.add(name, ms(time.Since(t)))
	if err != nil {
		return fmt.Errorf("view: %w", err)
	}
	if err := sn.Remove(b.ctx, v); err != nil {
		return fmt.Errorf("remove view: %w", err)
	}
	if err := b.gc(); err != nil {
		return err
	}

	t = time.Now()
	err = sn.Remove(b.ctx, c)
	if err == nil {
		err = b.gc()
	}
	r.remove.add(name, ms(time.Since(t)))
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}

// usage times Usage on an active snapshot holding 20,000 freshly written
// files (tupper reads a quota counter; the others walk the files). The
// snapshots stay mounted, as a running container's rootfs would.
func (b *bench) usage() (_ []*Result, retErr error) {
	if err := b.ensureBase(); err != nil {
		return nil, err
	}
	const key = "bench-usage"
	n := usageDirs * usageFiles
	target := &Target{Baseline: "btrfs", MaxRatio: 1.0 / 50, Text: "≥ 50× faster than btrfs"}
	res := newResult("usage", fmt.Sprintf("Usage, %s files", thousands(n)), "ms", b.snapshotters)
	res.Target = target
	spaced := newResult("usage", fmt.Sprintf("Usage, %s files, 1 s apart, after a write", thousands(n)), "ms", b.snapshotters)
	spaced.Target = target

	roots := map[string]string{}
	defer func() {
		for name, dir := range roots {
			if err := unmount(dir); err != nil && retErr == nil {
				retErr = err
			}
			if err := b.client.SnapshotService(name).Remove(b.ctx, key); err != nil && retErr == nil {
				retErr = fmt.Errorf("%s: remove: %w", name, err)
			}
		}
		if err := b.gc(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	reported, err := b.usageSnapshots(key, roots)
	if err != nil {
		return nil, err
	}

	walksBefore, walkErr := b.usageWalks()
	// Back to back: tupper commits a btrfs transaction before reading its
	// counters at most once a second, so most of these calls skip it.
	err = interleave(b.runs*usageCallsPerRound, b.snapshotters, func(round int, name string) error {
		t := time.Now()
		_, err := b.client.SnapshotService(name).Usage(b.ctx, key)
		res.add(name, ms(time.Since(t)))
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := b.spacedUsage(key, roots, spaced); err != nil {
		return nil, err
	}

	var parts []string
	for _, name := range b.snapshotters {
		u := reported[name]
		parts = append(parts, fmt.Sprintf("%s %.1f MiB / %d inodes", name, float64(u.Size)/(1<<20), u.Inodes))
	}
	res.Note = fmt.Sprintf("%s files of %d bytes written into a mounted active snapshot of the base layer, synced; %d Usage calls per snapshotter and round, back to back. Usage reported: %s (tupper reports bytes only, from btrfs quota counters).",
		thousands(n), usageFileSize, usageCallsPerRound, strings.Join(parts, ", "))
	if walkErr == nil {
		if walksAfter, err := b.usageWalks(); err == nil {
			res.Note += fmt.Sprintf(" tupper's /metrics: tupper_snapshotter_usage_walks_total went up by %.0f during the timed calls.", walksAfter-walksBefore)
		}
	}
	spaced.Note = "the same snapshots; before each call one more 4 KiB file is written into the snapshot (untimed), and tupper's calls are at least 1.1 s apart, so each one commits a btrfs transaction first, as under a stats poller"
	return []*Result{res, spaced}, nil
}

// usageSnapshots prepares snapshot key of the base layer in every
// snapshotter, mounts it (recorded in roots, for the caller's cleanup) and
// fills it with usage's files; then syncs, and returns each snapshotter's
// first, untimed Usage, so that no subject pays for the writeback of the
// files or for cold caches.
func (b *bench) usageSnapshots(key string, roots map[string]string) (map[string]snapshots.Usage, error) {
	for _, name := range b.snapshotters {
		sn := b.client.SnapshotService(name)
		mounts, err := sn.Prepare(b.ctx, key, baseKey)
		if err != nil {
			return nil, fmt.Errorf("%s: prepare: %w", name, err)
		}
		dir, err := b.mountAt(name, mounts)
		if err != nil {
			return nil, err
		}
		roots[name] = dir
		if err := writeFiles(dir, "usage", usageDirs, usageFiles, usageFileSize); err != nil {
			return nil, fmt.Errorf("%s: writing files: %w", name, err)
		}
	}
	unix.Sync()
	reported := map[string]snapshots.Usage{}
	for _, name := range b.snapshotters {
		u, err := b.client.SnapshotService(name).Usage(b.ctx, key)
		if err != nil {
			return nil, fmt.Errorf("%s: usage: %w", name, err)
		}
		reported[name] = u
	}
	return reported, nil
}

// spacedUsage times Usage as a stats poller sees it: the container has
// just written, and the last call was over a second ago, so tupper
// commits a transaction.
func (b *bench) spacedUsage(key string, roots map[string]string, spaced *Result) error {
	last := time.Now()
	return interleave(b.runs, b.snapshotters, func(round int, name string) error {
		if err := writeFiles(roots[name], fmt.Sprintf("spaced%d", round), 1, 1, usageFileSize); err != nil {
			return err
		}
		if name == b.snapshotters[0] {
			time.Sleep(time.Until(last.Add(1100 * time.Millisecond)))
		}
		t := time.Now()
		_, err := b.client.SnapshotService(name).Usage(b.ctx, key)
		spaced.add(name, ms(time.Since(t)))
		if name == b.snapshotters[0] {
			last = time.Now()
		}
		return err
	})
}

// gc runs containerd's garbage collector and waits for it, including the
// snapshotters' deletion of snapshots removed from containerd's metadata
// (containerd's Remove only drops the record). Deleting a lease with
// SynchronousDelete is the client's way to ask for that.
func (b *bench) gc() error {
	ls := b.client.LeasesService()
	l, err := ls.Create(b.ctx, leases.WithRandomID())
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	if err := ls.Delete(b.ctx, l, leases.SynchronousDelete); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	return nil
}

// unpack times unpacking the big image, whose content is already in
// containerd's content store, into each snapshotter: the client-side
// unpack that `ctr run` and nerdctl use (containerd's walking differ
// applies each layer on the snapshotter's mounts). Between rounds the
// image's snapshots are removed.
func (b *bench) unpack() ([]*Result, error) {
	if b.imageTar == "" {
		return nil, errors.New("no --image")
	}
	img, rawSize, layers, err := b.importImage()
	if err != nil {
		return nil, err
	}
	diffIDs, err := img.RootFS(b.ctx)
	if err != nil {
		return nil, err
	}
	// ChainIDs works in place, and RootFS returns the image's cached slice,
	// which Unpack uses too: work on a copy.
	chain := identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))

	desc := fmt.Sprintf("%d layers, %.0f MB", layers, float64(rawSize)/1e6)
	res := newResult("unpack", "Unpack ("+desc+")", "s", b.snapshotters)
	res.Target = &Target{Baseline: "btrfs", MaxRatio: 1, Text: "no slower than btrfs"}
	synced := newResult("unpack", "Unpack + syncfs", "s", b.snapshotters)
	res.Note = fmt.Sprintf("mkimage -kind big (%s uncompressed, gzip), content already in containerd's content store; image.Unpack without sync, as `ctr run` does it. The image's snapshots are removed, and everything synced, between runs (untimed).", desc)
	synced.Note = "the same unpack, then syncfs on the snapshotter's root until the data is on disk"

	removeAll := func(name string) error {
		sn := b.client.SnapshotService(name)
		for i := len(chain) - 1; i >= 0; i-- {
			if err := sn.Remove(b.ctx, chain[i].String()); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("removing %s: %w", chain[i], err)
			}
		}
		return b.gc()
	}
	for _, name := range b.snapshotters {
		if err := removeAll(name); err != nil {
			return nil, err
		}
	}
	err = interleave(b.runs, b.snapshotters, func(round int, name string) error {
		unix.Sync()
		t := time.Now()
		if err := img.Unpack(b.ctx, name); err != nil {
			return err
		}
		d := time.Since(t)
		if err := syncfs(b.roots[name]); err != nil {
			return err
		}
		d2 := time.Since(t)
		res.add(name, d.Seconds())
		synced.add(name, d2.Seconds())
		return removeAll(name)
	})
	if err != nil {
		return nil, err
	}
	return []*Result{res, synced}, nil
}

// importImage puts the image archive into containerd's content store and
// image service, and returns it with its uncompressed size and layer count.
func (b *bench) importImage() (containerd.Image, int64, int, error) {
	f, err := os.Open(b.imageTar)
	if err != nil {
		return nil, 0, 0, err
	}
	defer f.Close()
	imgs, err := b.client.Import(b.ctx, f)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("import: %w", err)
	}
	if len(imgs) != 1 {
		return nil, 0, 0, fmt.Errorf("import: %d images in %s, want 1", len(imgs), b.imageTar)
	}
	img, err := b.client.GetImage(b.ctx, imgs[0].Name)
	if err != nil {
		return nil, 0, 0, err
	}
	cs := b.client.ContentStore()
	manifest, err := images.Manifest(b.ctx, cs, img.Target(), img.Platform())
	if err != nil {
		return nil, 0, 0, err
	}
	var raw int64
	for _, l := range manifest.Layers {
		n, err := uncompressedSize(b, l)
		if err != nil {
			return nil, 0, 0, err
		}
		raw += n
	}
	return img, raw, len(manifest.Layers), nil
}

func uncompressedSize(b *bench, l ocispec.Descriptor) (int64, error) {
	ra, err := b.client.ContentStore().ReaderAt(b.ctx, l)
	if err != nil {
		return 0, err
	}
	defer ra.Close()
	var r io.Reader = io.NewSectionReader(ra, 0, ra.Size())
	if strings.HasSuffix(l.MediaType, "gzip") {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return 0, err
		}
		defer zr.Close()
		r = zr
	}
	return io.Copy(io.Discard, r)
}

// syncfs flushes the filesystem that holds path (all of them if path is
// empty).
func syncfs(path string) error {
	if path == "" {
		unix.Sync()
		return nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

package snapshotter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/metadata/boltutil"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Snapshot metadata is containerd's bolt MetaStore, in three files:
//
//	metadata.db       the checkpoint: durable, and the whole metadata up to
//	                  the journal sequence number it records
//	metadata.journal  a record of every write since (journal_linux.go)
//	metadata.work     the bolt database the snapshotter reads and writes
//
// A write commits to metadata.work without syncing, then appends its
// record to the journal and syncs that: one fdatasync per write, where
// bolt's own durable commit costs two. metadata.work may be torn by a
// power loss, so it is never trusted: opening a root copies the checkpoint
// to it and replays the journal's newer records, and a checkpoint copies
// it back to metadata.db (then empties the journal) every
// checkpointRecords records, when a root is opened and when it is closed.
//
// A write that returns has its record on disk; one that has not returned
// may be lost, as with any database. Readers can see a write a moment
// before its record is durable. Should the journal fail after bolt
// committed, the checkpoint is taken at once; if that fails too, the
// snapshotter refuses further writes until it is restarted (which starts
// over from the last checkpoint and journal).
//
// A version of tupper from before the journal opens metadata.db as its
// database and knows nothing of the journal, so the snapshotter must stop
// cleanly before a downgrade: Close folds the journal into metadata.db.
const (
	checkpointFile = "metadata.db"
	journalFile    = "metadata.journal"
	workFile       = "metadata.work"

	// checkpointRecords bounds the journal: past it, the next write takes
	// a checkpoint (a copy of the database and three fsyncs).
	checkpointRecords = 512
)

// keyJournalSeq, in tupper's bucket, is the sequence number of the last
// journal record the database holds.
var keyJournalSeq = []byte("journal-seq")

// metastore is the Snapshotter's metadata with its journal.
type metastore struct {
	// mu serialises writes from their transaction to their record, so
	// that records are in the order of the commits.
	mu   sync.Mutex
	root string
	ms   *storage.MetaStore
	j    *journal
	seq  uint64 // the last record written or replayed
	// failed is set when a write could be made durable neither by its
	// record nor by a checkpoint.
	failed error
	// checkpointAt is the journal length that calls for a checkpoint; a
	// failed one is tried again checkpointRecords records later.
	checkpointAt int
}

// openMetastore rebuilds root's working database from its checkpoint and
// journal, and takes a checkpoint if the journal had records.
func openMetastore(ctx context.Context, root string) (_ *metastore, retErr error) {
	work := filepath.Join(root, workFile)
	err := copyCheckpoint(filepath.Join(root, checkpointFile), work)
	if isNoSpace(err) && releaseReserve(ctx, root) {
		err = copyCheckpoint(filepath.Join(root, checkpointFile), work)
	}
	if err != nil {
		return nil, err
	}
	ms, err := storage.NewMetaStore(work, func(o *bolt.Options) error {
		o.Timeout = 5 * time.Second
		// Durability is the journal's; see above.
		o.NoSync, o.NoGrowSync = true, true
		return nil
	})
	if err != nil {
		return nil, err
	}
	m := &metastore{root: root, ms: ms, checkpointAt: checkpointRecords}
	defer func() {
		if retErr != nil {
			// No checkpoint: it would drop the records not replayed.
			m.failed = retErr
			m.close()
		}
	}()
	j, recs, err := openJournal(filepath.Join(root, journalFile))
	if err != nil {
		return nil, err
	}
	m.j = j
	if err := m.replay(ctx, recs); err != nil {
		return nil, err
	}
	if j.records > 0 {
		// Not needed to open: the journal holds what the checkpoint
		// would, so a full disk does not keep the root closed.
		if err := m.checkpoint(); err != nil {
			log.G(ctx).WithError(err).Warn("could not fold the metadata journal into a checkpoint; it keeps the writes")
		}
	}
	return m, nil
}

// copyCheckpoint makes work a copy of the checkpoint, or removes it when
// there is no checkpoint (a new root).
func copyCheckpoint(checkpoint, work string) error {
	// The old copy goes first: on a full disk its space is what the new
	// one needs.
	if err := os.Remove(work); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	src, err := os.OpenFile(checkpoint, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening the metadata checkpoint: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(work, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copying the metadata checkpoint to %s: %w", work, err)
	}
	return dst.Close()
}

// replay does again, in order, the records the database does not hold yet.
func (m *metastore) replay(ctx context.Context, recs []*journalRecord) error {
	ctx, t, err := m.ms.TransactionContext(ctx, true)
	if err != nil {
		return err
	}
	tx := t.(*bolt.Tx)
	defer tx.Rollback()
	m.seq = journalSeq(tx)
	replayed := 0
	for _, rec := range recs {
		if rec.Seq <= m.seq && replayed == 0 {
			continue // in the checkpoint already
		}
		if rec.Seq != m.seq+1 {
			return fmt.Errorf("metadata journal: record %d follows %d", rec.Seq, m.seq)
		}
		if err := replayRecord(ctx, tx, rec); err != nil {
			return fmt.Errorf("metadata journal: replaying record %d (%s %q): %w", rec.Seq, rec.Op, rec.Key, err)
		}
		m.seq = rec.Seq
		replayed++
	}
	if err := putJournalSeq(tx, m.seq); err != nil {
		return err
	}
	if replayed > 0 {
		log.G(ctx).WithField("records", replayed).Info("replayed the metadata journal")
	}
	return tx.Commit()
}

// replayRecord does rec's write again in tx: the same storage call, the
// same location, and the recorded labels and times. It must give the
// recorded snapshot id.
func replayRecord(ctx context.Context, tx *bolt.Tx, rec *journalRecord) error {
	if rec.Op == opRemove {
		id, _, err := storage.Remove(ctx, rec.Key)
		if err == nil && id != rec.ID {
			err = fmt.Errorf("removed id %s, the journal says %s", id, rec.ID)
		}
		if err != nil {
			return err
		}
		return forgetLocation(tx, id)
	}
	if rec.Info == nil {
		return errors.New("the record has no snapshot info")
	}
	var (
		name = rec.Key
		id   string
		err  error
	)
	switch rec.Op {
	case opCreate:
		var snap storage.Snapshot
		snap, err = storage.CreateSnapshot(ctx, rec.Kind, rec.Key, rec.Parent, restoreInfo(rec.Info))
		id = snap.ID
	case opCommit:
		name = rec.Name
		id, err = storage.CommitActive(ctx, rec.Key, rec.Name, rec.Usage, restoreInfo(rec.Info))
	case opUpdate:
		_, err = storage.UpdateInfo(ctx, snapshots.Info{Name: rec.Key, Labels: rec.Info.Labels})
	default:
		err = fmt.Errorf("unknown operation %q", rec.Op)
	}
	if err == nil && rec.Op != opUpdate {
		if id != rec.ID {
			return fmt.Errorf("made id %s, the journal says %s", id, rec.ID)
		}
		err = setLocation(tx, id, rec.location())
	}
	if err != nil {
		return err
	}
	return restoreTimestamps(tx, name, rec.Info)
}

// restoreInfo gives a replayed write the labels (and a commit its parent)
// that the journal recorded.
func restoreInfo(info *snapshots.Info) snapshots.Opt {
	return func(i *snapshots.Info) error {
		i.Labels, i.Parent = info.Labels, info.Parent
		return nil
	}
}

// restoreTimestamps sets a replayed snapshot's times to the recorded ones,
// in the MetaStore's bucket for it (storage stamps the time of the replay).
func restoreTimestamps(tx *bolt.Tx, name string, info *snapshots.Info) error {
	b := tx.Bucket([]byte("v1"))
	if b != nil {
		b = b.Bucket([]byte("snapshots"))
	}
	if b != nil {
		b = b.Bucket([]byte(name))
	}
	if b == nil {
		return fmt.Errorf("snapshot %q is not where the MetaStore keeps it", name)
	}
	return boltutil.WriteTimestamps(b, info.Created, info.Updated)
}

func journalSeq(tx *bolt.Tx) uint64 {
	if b := tx.Bucket(bucketTupper); b != nil {
		if v := b.Get(keyJournalSeq); len(v) == 8 {
			return binary.BigEndian.Uint64(v)
		}
	}
	return 0
}

func putJournalSeq(tx *bolt.Tx, seq uint64) error {
	b, err := tx.CreateBucketIfNotExists(bucketTupper)
	if err != nil {
		return err
	}
	return b.Put(keyJournalSeq, binary.BigEndian.AppendUint64(nil, seq))
}

// checkpoint copies the working database to metadata.db, durably, and
// empties the journal. No write may run meanwhile. An error after the copy
// is in place (emptying the journal failed) leaves every write durable.
func (m *metastore) checkpoint() error {
	durable, err := m.copyToCheckpoint()
	if durable {
		err = m.j.reset()
		m.checkpointAt = checkpointRecords
	}
	if err != nil {
		return fmt.Errorf("metadata checkpoint: %w", err)
	}
	return nil
}

// copyToCheckpoint writes the working database to a new file and renames
// it to metadata.db; durable says the new metadata.db is on disk.
func (m *metastore) copyToCheckpoint() (durable bool, err error) {
	tmp := filepath.Join(m.root, checkpointFile+".tmp")
	_, t, err := m.ms.TransactionContext(context.Background(), false)
	if err == nil {
		err = writeCheckpoint(t.(*bolt.Tx), tmp)
		t.Rollback()
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(m.root, checkpointFile))
	}
	if err != nil {
		os.Remove(tmp)
		return false, err
	}
	err = syncDir(m.root)
	return err == nil, err
}

// syncDir makes the entries of dir (a rename into it) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return nil
}

func writeCheckpoint(tx *bolt.Tx, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	if _, err = tx.WriteTo(f); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// close takes a last checkpoint, so that the journal is empty after a
// clean stop, and closes the database. A second close does nothing more.
func (m *metastore) close() error {
	var err error
	if m.j != nil {
		if m.failed == nil && m.j.records > 0 {
			err = m.checkpoint()
		}
		err = errors.Join(err, m.j.close())
		m.j = nil
	}
	return errors.Join(err, m.ms.Close())
}

// errNotDurable marks a write that bolt committed to the working database
// but that neither its record nor a checkpoint is known to have made
// durable: the working database holds it until a restart, after which it
// may or may not be there. Either way its subvolume must stay.
type errNotDurable struct{ error }

func (e errNotDurable) Unwrap() error { return e.error }

// write runs fn in a write transaction, commits it and makes it durable
// with the journal record fn returns. fn's error rolls the transaction back.
func (s *Snapshotter) write(ctx context.Context, fn func(context.Context, *bolt.Tx) (*journalRecord, error)) error {
	m := s.meta
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.j == nil {
		return fmt.Errorf("snapshot metadata is closed: %w", errdefs.ErrUnavailable)
	}
	if m.failed != nil {
		return fmt.Errorf("snapshot metadata is read-only until the snapshotter restarts: %w", m.failed)
	}
	ctx, tx, err := s.transaction(ctx, true)
	if err != nil {
		return err
	}
	rec, err := fn(ctx, tx)
	if err == nil {
		rec.Seq = m.seq + 1
		err = putJournalSeq(tx, rec.Seq)
	}
	if err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	m.seq = rec.Seq
	s.crashPoint("journal:committed")
	if err := s.appendRecord(ctx, rec); err != nil {
		return err
	}
	s.crashPoint("journal:appended")
	if m.j.records >= m.checkpointAt {
		if err := m.checkpoint(); err != nil {
			// The record is durable; the journal only grows.
			m.checkpointAt = m.j.records + checkpointRecords
			log.G(ctx).WithError(err).Warn("metadata checkpoint failed; the journal keeps the writes")
		}
	}
	return nil
}

// appendRecord makes a committed write durable: by its record, after
// giving up the space reserve if the disk is full, or else by a
// checkpoint. When all fail, writes stop (see errNotDurable).
func (s *Snapshotter) appendRecord(ctx context.Context, rec *journalRecord) error {
	m := s.meta
	err := m.j.append(rec)
	if err != nil && isNoSpace(err) && s.releaseReserve(ctx) {
		err = m.j.append(rec)
	}
	if err == nil {
		return nil
	}
	durable, cerr := m.copyToCheckpoint()
	if durable {
		if rerr := m.j.reset(); rerr != nil {
			log.G(ctx).WithError(rerr).Warn("emptying the metadata journal after a checkpoint")
		}
		log.G(ctx).WithError(err).Warn("metadata journal write failed; took a checkpoint instead")
		return nil
	}
	m.failed = errors.Join(err, cerr)
	return errNotDurable{m.failed}
}

// MetadataCollectors report the metadata journal on /metrics: whether
// writes are refused (a journal and checkpoint failure, until a restart)
// and how many records wait for the next checkpoint.
func (s *Snapshotter) MetadataCollectors() []prometheus.Collector {
	m := s.meta
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tupper_snapshotter_metadata_read_only",
			Help: "1 when snapshot metadata writes are refused because neither the journal nor a checkpoint could make one durable; a restart clears it.",
		}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.failed != nil {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tupper_snapshotter_metadata_journal_records",
			Help: "Metadata journal records since the last checkpoint.",
		}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.j == nil {
				return 0
			}
			return float64(m.j.records)
		}),
	}
}

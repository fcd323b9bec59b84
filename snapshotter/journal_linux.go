package snapshotter

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/snapshots"
	"golang.org/x/sys/unix"
)

// The metadata journal: one record per metadata write, appended and made
// durable with one fdatasync. bolt makes a commit durable with two (its
// pages, then its meta page, which must not reach the disk before them), so
// it runs without syncing on a working copy, and the journal is what
// survives a power loss (see metastore_linux.go).
//
// On disk, a record is its length and the CRC-32C of its payload, both
// 32-bit little-endian, then the payload: the journalRecord as JSON.
// Records are appended one at a time, each synced before the next, so only
// the last one can be torn: one cut short, or failing its checksum where
// the file ends, is a write that never returned, and is cut off when the
// journal is opened. Damage anywhere else is corruption, and opening fails
// rather than drop the records after it.

const (
	journalHeaderSize = 8
	// maxJournalRecord bounds one record: a snapshot's labels, which
	// containerd limits to 4 KiB each, are most of it.
	maxJournalRecord = 16 << 20
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// Journal operations, one per metadata write of the Snapshotter.
const (
	opCreate = "create" // Prepare or View
	opCommit = "commit"
	opRemove = "remove"
	opUpdate = "update" // labels
)

// journalRecord is what a metadata write did, enough to do it again on the
// last checkpoint: the arguments, and what the write gave (the id, which
// must come out the same, the labels and the timestamps).
type journalRecord struct {
	Seq uint64 `json:"seq"`
	Op  string `json:"op"`
	// Key is the snapshot's key; for a commit, the active snapshot's.
	Key string `json:"key"`
	// Name is a commit's new name.
	Name   string         `json:"name,omitempty"`
	Kind   snapshots.Kind `json:"kind,omitempty"`
	Parent string         `json:"parent,omitempty"`
	// ID is the snapshot id the write made or removed.
	ID string `json:"id,omitempty"`
	// Info is the snapshot as the write left it (not for a removal).
	Info  *snapshots.Info `json:"info,omitempty"`
	Usage snapshots.Usage `json:"usage"`
	// Rel and Shared are the location the write recorded (create, commit).
	Rel    string `json:"rel,omitempty"`
	Shared bool   `json:"shared,omitempty"`
}

func (r *journalRecord) location() location { return location{rel: r.Rel, shared: r.Shared} }

func (r *journalRecord) setLocation(loc location) { r.Rel, r.Shared = loc.rel, loc.shared }

// journal is the open journal file. Its users serialise every call.
type journal struct {
	f    *os.File
	size int64 // the end of the last whole record
	// records counts the records since the last checkpoint.
	records int
	// sync is unix.Fdatasync; tests make it fail.
	sync func(fd int) error
}

// openJournal opens (or creates) the journal at path and returns its whole
// records, in order. A torn tail is cut off.
func openJournal(path string) (*journal, []*journalRecord, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err == nil {
		// The name must last as long as the records (a new file).
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, nil, fmt.Errorf("opening the metadata journal: %w", err)
	}
	recs, size, err := readJournal(f)
	if err == nil {
		err = cutTail(f, size)
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("reading the metadata journal %s: %w", path, err)
	}
	return &journal{f: f, size: size, records: len(recs), sync: unix.Fdatasync}, recs, nil
}

// readJournal reads the whole records from the start of f, and where they
// end: where the file ends, or where its torn last record starts.
func readJournal(f *os.File) ([]*journalRecord, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	var (
		recs []*journalRecord
		off  int64
		end  = st.Size()
	)
	for off < end {
		payload, err := readRecord(f, off, end)
		if errors.Is(err, errTornTail) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("record at offset %d (after %d whole records): %w", off, len(recs), err)
		}
		rec := new(journalRecord)
		if err := json.Unmarshal(payload, rec); err != nil {
			return nil, 0, fmt.Errorf("record at offset %d passes its checksum but does not decode: %w", off, err)
		}
		recs = append(recs, rec)
		off += journalHeaderSize + int64(len(payload))
	}
	return recs, off, nil
}

var errTornTail = errors.New("torn last record")

// readRecord reads the payload of the record at off in a file of end
// bytes: errTornTail if it is a torn last record, another error if it is
// damaged with more behind it.
func readRecord(f *os.File, off, end int64) ([]byte, error) {
	if off+journalHeaderSize > end {
		return nil, errTornTail
	}
	hdr := make([]byte, journalHeaderSize)
	if _, err := f.ReadAt(hdr, off); err != nil {
		return nil, err
	}
	n := int64(binary.LittleEndian.Uint32(hdr))
	if n == 0 || n > maxJournalRecord {
		// A tail of zeros is space a torn append left allocated.
		if zero, err := zeroFrom(f, off, end); err != nil || zero {
			return nil, cmp.Or(err, errTornTail)
		}
		return nil, fmt.Errorf("bad length %d", n)
	}
	if off+journalHeaderSize+n > end {
		return nil, errTornTail
	}
	payload := make([]byte, n)
	if _, err := f.ReadAt(payload, off+journalHeaderSize); err != nil {
		return nil, err
	}
	if crc32.Checksum(payload, crc32c) != binary.LittleEndian.Uint32(hdr[4:]) {
		if off+journalHeaderSize+n == end {
			return nil, errTornTail
		}
		return nil, errors.New("bad checksum")
	}
	return payload, nil
}

// zeroFrom says whether f holds only zero bytes from off to end.
func zeroFrom(f *os.File, off, end int64) (bool, error) {
	buf := make([]byte, 64<<10)
	for off < end {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
		for _, b := range buf[:n] {
			if b != 0 {
				return false, nil
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		if n == 0 {
			break
		}
		off += int64(n)
	}
	return true, nil
}

// cutTail drops what follows the last whole record, durably, so that new
// records follow it directly.
func cutTail(f *os.File, size int64) error {
	st, err := f.Stat()
	if err != nil || st.Size() == size {
		return err
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return unix.Fdatasync(int(f.Fd()))
}

// append writes rec after the last record and makes it durable. When it
// fails, the journal is cut back to what it was, so that a later record
// does not follow a torn one.
func (j *journal) append(rec *journalRecord) error {
	payload, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if len(payload) > maxJournalRecord {
		return fmt.Errorf("metadata journal record of %d bytes, more than %d", len(payload), maxJournalRecord)
	}
	buf := make([]byte, journalHeaderSize+len(payload))
	binary.LittleEndian.PutUint32(buf, uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(payload, crc32c))
	copy(buf[journalHeaderSize:], payload)
	if _, err = j.f.WriteAt(buf, j.size); err == nil {
		err = j.sync(int(j.f.Fd()))
	}
	if err != nil {
		if terr := j.f.Truncate(j.size); terr != nil {
			err = errors.Join(err, fmt.Errorf("cutting the journal back: %w", terr))
		}
		return fmt.Errorf("writing the metadata journal: %w", err)
	}
	j.size += int64(len(buf))
	j.records++
	return nil
}

// reset empties the journal once a checkpoint holds all it had. Once the
// file is cut, new records go to its start even if the sync fails: the
// records it had, should they come back, are all in the checkpoint.
func (j *journal) reset() error {
	if err := j.f.Truncate(0); err != nil {
		return err
	}
	j.size, j.records = 0, 0
	return j.sync(int(j.f.Fd()))
}

func (j *journal) close() error { return j.f.Close() }

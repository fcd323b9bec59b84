package snapshotter

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

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
// 32-bit little-endian, then the payload: the journalRecord as JSON. A
// record cut short or failing its checksum ends the journal: it is the
// tail of a write that never returned, and is cut off when the journal is
// opened.

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
}

// openJournal opens (or creates) the journal at path and returns its whole
// records, in order. A torn tail is cut off.
func openJournal(path string) (*journal, []*journalRecord, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
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
	return &journal{f: f, size: size, records: len(recs)}, recs, nil
}

// readJournal reads the whole records from the start of f, and where they
// end.
func readJournal(f *os.File) ([]*journalRecord, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	var (
		recs []*journalRecord
		off  int64
	)
	hdr := make([]byte, journalHeaderSize)
	for off+journalHeaderSize <= st.Size() {
		if _, err := f.ReadAt(hdr, off); err != nil {
			return nil, 0, err
		}
		n := int64(binary.LittleEndian.Uint32(hdr))
		if n == 0 || n > maxJournalRecord || off+journalHeaderSize+n > st.Size() {
			break
		}
		payload := make([]byte, n)
		if _, err := f.ReadAt(payload, off+journalHeaderSize); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, err
		}
		if crc32.Checksum(payload, crc32c) != binary.LittleEndian.Uint32(hdr[4:]) {
			break
		}
		rec := new(journalRecord)
		if err := json.Unmarshal(payload, rec); err != nil {
			break
		}
		recs = append(recs, rec)
		off += journalHeaderSize + n
	}
	return recs, off, nil
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
		err = unix.Fdatasync(int(j.f.Fd()))
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

// reset empties the journal once a checkpoint holds all it had.
func (j *journal) reset() error {
	if err := j.f.Truncate(0); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(j.f.Fd())); err != nil {
		return err
	}
	j.size, j.records = 0, 0
	return nil
}

func (j *journal) close() error { return j.f.Close() }

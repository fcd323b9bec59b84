package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// journalScenario does one of every metadata write, with labels, and
// leaves snapshots of every kind behind.
func journalScenario(t *testing.T, ctx context.Context, s *Snapshotter) {
	t.Helper()
	labels := func(kv ...string) snapshots.Opt {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return snapshots.WithLabels(m)
	}
	mounts, err := s.Prepare(ctx, "l1-active", "", labels("a", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mounts[0].Source, "f"), []byte("layer"), 0o644); err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return s.Commit(ctx, "l1", "l1-active", labels("layer", "yes")) },
		func() error { _, err := s.View(ctx, "v1", "l1", labels("v", "1")); return err },
		func() error { _, err := s.Prepare(ctx, "c1", "l1", labels("c", "1")); return err },
		func() error { _, err := s.Prepare(ctx, "c2", "l1"); return err },
		func() error { _, err := s.Prepare(ctx, "c3", "l1"); return err }, // takes a spare
		func() error {
			_, err := s.Update(ctx, snapshots.Info{Name: "c1", Labels: map[string]string{"new": "label"}}, "labels.new")
			return err
		},
		func() error { return s.Commit(ctx, "l2", "c2") },
		func() error { return s.Remove(ctx, "v1") },
		func() error { _, err := s.View(ctx, "v2", "l2"); return err },
		func() error { return s.Remove(ctx, "c3") },
	}
	for i, step := range steps {
		// Distinct timestamps, so that a replay that stamped its own
		// time would show.
		time.Sleep(2 * time.Millisecond)
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}

// describe lists every snapshot as one line: kind, parent, labels, times,
// usage and mounts (whose source is its subvolume).
func describe(t *testing.T, ctx context.Context, s *Snapshotter) []string {
	t.Helper()
	var out []string
	err := s.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		usage, err := s.Usage(ctx, info.Name)
		if err != nil {
			return err
		}
		var mounts any = "-"
		if info.Kind != snapshots.KindCommitted {
			if mounts, err = s.Mounts(ctx, info.Name); err != nil {
				return err
			}
		}
		out = append(out, fmt.Sprintf("%s %s parent=%q labels=%v created=%s updated=%s usage=%+v mounts=%+v",
			info.Name, info.Kind, info.Parent, info.Labels, info.Created.Format(time.RFC3339Nano),
			info.Updated.Format(time.RFC3339Nano), usage, mounts))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// openRoot opens root and closes it when the test ends, also when it
// fails half-way (Close after abandon or Close is harmless).
func openRoot(t *testing.T, ctx context.Context, root string) *Snapshotter {
	t.Helper()
	s, err := NewSnapshotter(ctx, root)
	if err != nil {
		t.Fatalf("opening %s: %v", root, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sameMetadata fails the test unless two describe listings are the same.
func sameMetadata(t *testing.T, before, after []string) {
	t.Helper()
	if b, a := strings.Join(before, "\n"), strings.Join(after, "\n"); b != a {
		t.Fatalf("metadata differs:\nbefore:\n%s\nafter:\n%s", b, a)
	}
}

// requireSnapshots fails the test unless s has every one of keys.
func requireSnapshots(t *testing.T, ctx context.Context, s *Snapshotter, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, err := s.Stat(ctx, k); err != nil {
			t.Fatalf("%s after the power loss: %v", k, err)
		}
	}
}

// abandon stops s as a power loss would: without the checkpoint Close
// takes, and with the working database left as it is.
func abandon(s *Snapshotter) {
	s.sealer.flush()
	s.spares.close(context.Background())
	s.meta.j.close()
	s.meta.j = nil
	s.meta.ms.Close()
	s.lock.Close()
	s.lock = nil
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestJournalReplay: after a power loss, the working database may be torn
// anywhere; reopening the root rebuilds the metadata from the checkpoint
// and the journal, exactly as it was: ids, subvolumes, labels, times, usage.
func TestJournalReplay(t *testing.T) {
	s := newTestSnapshotter(t)
	root, ctx := s.root, testContext(t)
	journalScenario(t, ctx, s)
	// Half the writes in the checkpoint, half in the journal.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openRoot(t, ctx, root)
	if _, err := s.Prepare(ctx, "c5", "l2", snapshots.WithLabels(map[string]string{"c": "5"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, snapshots.Info{Name: "l2", Labels: map[string]string{"l": "2"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	before := describe(t, ctx, s)
	if fileSize(t, filepath.Join(root, journalFile)) == 0 {
		t.Fatal("the writes left no journal records")
	}
	abandon(s)
	// What bolt had not synced is lost: the working copy is garbage.
	if err := os.WriteFile(filepath.Join(root, workFile), []byte(strings.Repeat("torn", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}

	s = openRoot(t, ctx, root)
	after := describe(t, ctx, s)
	sameMetadata(t, before, after)
	if n := fileSize(t, filepath.Join(root, journalFile)); n != 0 {
		t.Fatalf("the journal holds %d bytes after the replay's checkpoint", n)
	}
	if st := readState(t, s); !st.consistent() {
		t.Fatalf("metadata and subvolumes disagree after replay: %+v", st)
	}
	// And it keeps working: the replayed layer has its file.
	mounts, err := s.Prepare(ctx, "c4", "l1")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mounts[0].Source, "f")); err != nil || string(b) != "layer" {
		t.Fatalf("a new snapshot of the replayed layer: %q %v", b, err)
	}
}

// TestJournalTornTail: a record cut short by a crash, or one whose checksum
// fails, ends the journal; the whole records before it are replayed and
// the tail is cut off.
func TestJournalTornTail(t *testing.T) {
	for _, tail := range []struct {
		name string
		data []byte
	}{
		{"header cut short", []byte{0x40, 0, 0}},
		{"payload cut short", []byte{0x40, 0, 0, 0, 1, 2, 3, 4, '{', '"'}},
		{"bad checksum", append([]byte{2, 0, 0, 0, 1, 2, 3, 4}, "{}"...)},
	} {
		t.Run(tail.name, func(t *testing.T) {
			s := newTestSnapshotter(t)
			root, ctx := s.root, testContext(t)
			journalScenario(t, ctx, s)
			before := describe(t, ctx, s)
			abandon(s)
			jpath := filepath.Join(root, journalFile)
			whole := fileSize(t, jpath)
			f, err := os.OpenFile(jpath, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(tail.data); err != nil {
				t.Fatal(err)
			}
			f.Close()
			// Reading alone (no checkpoint) must cut the tail.
			j, recs, err := openJournal(jpath)
			if err != nil {
				t.Fatal(err)
			}
			j.close()
			if len(recs) == 0 || fileSize(t, jpath) != whole {
				t.Fatalf("%d records, journal of %d bytes; want the scenario's records and %d bytes", len(recs), fileSize(t, jpath), whole)
			}
			s = openRoot(t, ctx, root)
			sameMetadata(t, before, describe(t, ctx, s))
		})
	}
}

// TestJournalDamaged: damage before the last record is not a torn tail:
// opening fails, naming the journal, and keeps it as it is.
func TestJournalDamaged(t *testing.T) {
	s := newTestSnapshotter(t)
	root, ctx := s.root, testContext(t)
	journalScenario(t, ctx, s)
	abandon(s)
	jpath := filepath.Join(root, journalFile)
	b, err := os.ReadFile(jpath)
	if err != nil {
		t.Fatal(err)
	}
	b[journalHeaderSize+2] ^= 0xff // in the first record's payload
	if err := os.WriteFile(jpath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSnapshotter(ctx, root); err == nil || !strings.Contains(err.Error(), "metadata journal") {
		t.Fatalf("NewSnapshotter with a damaged first record: %v, want an error naming the journal", err)
	}
	if got, err := os.ReadFile(jpath); err != nil || string(got) != string(b) {
		t.Fatalf("the journal changed after the failed open (%v)", err)
	}
}

// TestJournalAfterCheckpoint: a crash between a checkpoint's rename and
// the journal's reset leaves records the checkpoint already holds; they
// are not done twice.
func TestJournalAfterCheckpoint(t *testing.T) {
	s := newTestSnapshotter(t)
	root, ctx := s.root, testContext(t)
	journalScenario(t, ctx, s)
	before := describe(t, ctx, s)
	jpath := filepath.Join(root, journalFile)
	records, err := os.ReadFile(jpath)
	if err != nil || len(records) == 0 {
		t.Fatalf("journal: %d bytes, %v", len(records), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := fileSize(t, jpath); n != 0 {
		t.Fatalf("Close left %d bytes in the journal", n)
	}
	if err := os.WriteFile(jpath, records, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openRoot(t, ctx, root)
	sameMetadata(t, before, describe(t, ctx, s))
}

// TestJournalCheckpoints: the journal is folded into metadata.db every
// checkpointRecords writes, so it stays bounded.
func TestJournalCheckpoints(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < checkpointRecords; i++ {
		if _, err := s.Update(ctx, snapshots.Info{Name: "a", Labels: map[string]string{"n": fmt.Sprint(i)}}, "labels.n"); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.meta.j.records; n >= checkpointRecords {
		t.Fatalf("%d records in the journal after %d writes", n, checkpointRecords+1)
	}
	db, err := bolt.Open(filepath.Join(s.root, checkpointFile), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var seq uint64
	db.View(func(tx *bolt.Tx) error { seq = journalSeq(tx); return nil })
	// The checkpoint came with the checkpointRecords-th write.
	if seq != uint64(checkpointRecords) || s.meta.seq != seq+1 || s.meta.j.records != 1 {
		t.Fatalf("metadata.db holds record %d, the journal is at %d with %d records; want %d, %d, 1", seq, s.meta.seq, s.meta.j.records, checkpointRecords, checkpointRecords+1)
	}
}

// failingSync fails the next n syncs of the journal.
func failingSync(n int) func(int) error {
	return func(fd int) error {
		if n > 0 {
			n--
			return unix.EIO
		}
		return unix.Fdatasync(fd)
	}
}

// reopenAfterPowerLoss abandons s, trashes its working copy and opens
// its root again.
func reopenAfterPowerLoss(t *testing.T, ctx context.Context, s *Snapshotter) *Snapshotter {
	t.Helper()
	root := s.root
	abandon(s)
	if err := os.WriteFile(filepath.Join(root, workFile), []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	return openRoot(t, ctx, root)
}

// TestJournalAppendFails: when a record cannot be synced, the write is
// made durable by a checkpoint instead, and returns.
func TestJournalAppendFails(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	s.meta.j.sync = failingSync(1)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatalf("Prepare with a failing journal: %v", err)
	}
	if s.meta.j.size != 0 {
		t.Fatalf("the journal holds %d bytes after the checkpoint", s.meta.j.size)
	}
	if _, err := s.Prepare(ctx, "b", ""); err != nil {
		t.Fatal(err)
	}
	requireSnapshots(t, ctx, reopenAfterPowerLoss(t, ctx, s), "a", "b")
}

// TestJournalResetSyncFails: a checkpoint whose journal truncation is
// not synced still starts the journal over at its beginning, so that the
// writes after it are found again.
func TestJournalResetSyncFails(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	s.meta.j.sync = failingSync(1)
	if err := s.meta.checkpoint(); err == nil {
		t.Fatal("the checkpoint did not report the failed sync")
	}
	if _, err := s.Prepare(ctx, "b", ""); err != nil {
		t.Fatal(err)
	}
	requireSnapshots(t, ctx, reopenAfterPowerLoss(t, ctx, s), "a", "b")
}

// TestJournalNotDurable: when neither the record nor a checkpoint can be
// written, the write fails, its subvolume stays for the working database
// that names it, later writes are refused, and a restart is consistent.
func TestJournalNotDurable(t *testing.T) {
	s := newTestSnapshotter(t)
	root, ctx := s.root, testContext(t)
	if _, err := s.Prepare(ctx, "base", ""); err != nil {
		t.Fatal(err)
	}
	s.meta.j.sync = failingSync(1 << 30)
	// A directory where the checkpoint's new file goes, not empty, so
	// that the failed checkpoint cannot remove it.
	if err := os.MkdirAll(filepath.Join(root, checkpointFile+".tmp", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := s.Prepare(ctx, "a", "")
	var notDurable errNotDurable
	if !errors.As(err, &notDurable) {
		t.Fatalf("Prepare with no way to make it durable: %v", err)
	}
	if st := readState(t, s); !subset(st.known, st.onDisk) {
		t.Fatalf("the working metadata names a subvolume that is gone: %+v", st)
	}
	if _, err := s.Prepare(ctx, "b", ""); err == nil || !strings.Contains(err.Error(), "until the snapshotter restarts") {
		t.Fatalf("a write after the failure: %v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.MetadataCollectors()...)
	if got := gauge(t, reg, "tupper_snapshotter_metadata_read_only"); got != 1 {
		t.Fatalf("tupper_snapshotter_metadata_read_only is %v with writes refused", got)
	}
	if err := os.RemoveAll(filepath.Join(root, checkpointFile+".tmp")); err != nil {
		t.Fatal(err)
	}
	s = reopenAfterPowerLoss(t, ctx, s)
	if _, err := s.Stat(ctx, "base"); err != nil {
		t.Fatal(err)
	}
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if st := readState(t, s); !st.consistent() {
		t.Fatalf("not consistent after the restart: %+v", st)
	}
}

// TestCleanupWaitsForTheRecord: a Cleanup that comes while a Remove is
// between its bolt commit and its journal record waits for the record.
// Had it run in that gap, it would delete the subvolume of a snapshot
// that a crash before the record brings back.
func TestCleanupWaitsForTheRecord(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		steps   []string
		cleaned = make(chan error, 1)
	)
	s.step = func(name string) {
		mu.Lock()
		steps = append(steps, name)
		mu.Unlock()
		if name == "journal:committed" {
			go func() { cleaned <- s.Cleanup(ctx) }()
		}
	}
	if err := s.Remove(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := <-cleaned; err != nil {
		t.Fatal(err)
	}
	s.step = nil
	mu.Lock()
	defer mu.Unlock()
	order := strings.Join(steps, " ")
	if strings.Index(order, "cleanup:locked") < strings.Index(order, "journal:appended") {
		t.Fatalf("Cleanup ran before the Remove's record was written: %s", order)
	}
}

// TestLabelsAndKeysAreUTF8: the journal records keys and labels as JSON
// strings, so bytes that are not UTF-8 are refused, as containerd's API
// refuses them, rather than come back changed after a replay.
func TestLabelsAndKeysAreUTF8(t *testing.T) {
	s := newTestSnapshotter(t)
	ctx := testContext(t)
	if _, err := s.Prepare(ctx, "a\xff", ""); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Prepare of a key that is not UTF-8: %v", err)
	}
	bad := snapshots.WithLabels(map[string]string{"l": "\xfe"})
	if _, err := s.Prepare(ctx, "b", "", bad); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Prepare with a label that is not UTF-8: %v", err)
	}
	if _, err := s.Prepare(ctx, "c", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "c-layer", "c", bad); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Commit with a label that is not UTF-8: %v", err)
	}
	if _, err := s.Update(ctx, snapshots.Info{Name: "c", Labels: map[string]string{"\xfe": "v"}}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Update with a label that is not UTF-8: %v", err)
	}
}

// TestJournalReplayFailureKeepsRecords: a journal that does not fit its
// checkpoint (here, a record that skips a sequence number) stops the
// snapshotter with an error naming the journal, and the records stay.
func TestJournalReplayFailureKeepsRecords(t *testing.T) {
	s := newTestSnapshotter(t)
	root, ctx := s.root, testContext(t)
	journalScenario(t, ctx, s)
	abandon(s)
	jpath := filepath.Join(root, journalFile)
	j, recs, err := openJournal(jpath)
	if err != nil {
		t.Fatal(err)
	}
	gap := *recs[len(recs)-1]
	gap.Seq += 2
	if err := j.append(&gap); err != nil {
		t.Fatal(err)
	}
	j.close()
	size := fileSize(t, jpath)
	if _, err := NewSnapshotter(ctx, root); err == nil || !strings.Contains(err.Error(), "metadata journal") {
		t.Fatalf("NewSnapshotter with a gap in the journal: %v, want an error naming the journal", err)
	}
	if got := fileSize(t, jpath); got != size {
		t.Fatalf("the journal went from %d to %d bytes after the failed open", size, got)
	}
}

// gauge reads the value of the gauge name from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

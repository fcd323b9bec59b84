package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"

	"github.com/containerd/log"

	"github.com/tupper/tupper/shim/network"
)

const networkFile = "network.json"

// networkRecord is what was attached for the container, so that its
// address and veth are released also when the shim that made them is gone.
type networkRecord struct {
	Owner  string         `json:"owner"`
	Config network.Config `json:"config"`
}

// AttachNetwork records the attachment first (so that a shim dying
// half-way still leaves cleanup a record), then attaches the container
// whose network namespace is at netnsPath.
func AttachNetwork(dir string, cfg network.Config, owner, netnsPath string) (*network.Attachment, error) {
	if err := writeJSON(filepath.Join(dir, networkFile), networkRecord{Owner: owner, Config: cfg}); err != nil {
		return nil, err
	}
	return network.Attach(cfg, owner, netnsPath)
}

// NetworkRecorded reports whether dir still records an attachment, one
// that a release did not manage to undo.
func NetworkRecorded(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, networkFile))
	return err == nil
}

// ReleaseNetwork detaches what the bundle's record names and removes the
// record. Safe to call more than once, and when nothing was attached.
func ReleaseNetwork(ctx context.Context, dir string) {
	ReleaseNetworkLater(ctx, dir)()
}

// ReleaseNetworkLater releases the addresses and removes the record now,
// and returns the deletion of the veth (see network.Release), which logs
// its own failure.
func ReleaseNetworkLater(ctx context.Context, dir string) (deleteVeth func()) {
	deleteVeth = func() {}
	var rec networkRecord
	b, err := os.ReadFile(filepath.Join(dir, networkFile))
	if errors.Is(err, os.ErrNotExist) {
		return deleteVeth
	}
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	var del func() error
	if err == nil {
		del, err = network.Release(rec.Config, rec.Owner)
		deleteVeth = func() {
			if err := del(); err != nil {
				log.G(ctx).WithError(err).WithField("bundle", dir).Warn("deleting the veth of tupper's network")
			}
		}
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("bundle", dir).Warn("releasing tupper network")
		return deleteVeth
	}
	os.Remove(filepath.Join(dir, networkFile))
	return deleteVeth
}

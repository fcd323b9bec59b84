package bundle

import (
	"path/filepath"

	"github.com/tupper/tupper/shim/network"
)

// RecordNetwork records an attachment made by other means than
// AttachNetwork (a restore, whose veth CRIU makes), so that Delete and
// `shim delete` release it the same way.
func RecordNetwork(dir string, cfg network.Config, owner string) error {
	return writeJSON(filepath.Join(dir, networkFile), networkRecord{Owner: owner, Config: cfg})
}

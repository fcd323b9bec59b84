package main

import (
	"compress/gzip"
	"fmt"
	"os"
)

var pauseBin *string

// writePause writes the sandbox image CRI starts for every pod: one static
// binary, /pause, as its entrypoint.
func writePause(name, out, bin string) error {
	b, err := os.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("pause binary: %w (build it with hack/install-cri.sh)", err)
	}
	l := layer{comment: "tupper pause", entries: []entry{file("pause", 0o755, 0, 0, string(b))}}
	archive, err := imageArchiveCmd(name, []layer{l}, gzip.BestCompression, []string{"/pause"}, nil)
	if err != nil {
		return err
	}
	return writeArchive(out, archive)
}

package security

import (
	"fmt"
	"os"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/cyphar/filepath-securejoin/pathrs-lite/procfs"
	"golang.org/x/sys/unix"
)

// Writes to /proc (sysctls, LSM attributes, oom_score_adj) go through
// pathrs-lite's procfs handles: a procfs instance of our own where the
// kernel allows it, resolved without crossing mounts or following magic
// links, and checked to be procfs. A container's own /proc may be
// anything: a volume over it, an image's symlink, a procfs file bound
// over another (a write meant for a sysctl of its own landing in
// core_pattern, CVE-2025-52881).

// writeProcRoot writes value to /proc/<sub> (a sysctl: sys/...).
func writeProcRoot(sub, value string) error {
	return writeProc(sub, value, func(h *procfs.Handle) (*os.File, func(), error) {
		f, err := h.OpenRoot(sub)
		return f, func() {}, err
	})
}

// writeProcThreadSelf writes value to /proc/thread-self/<sub>.
func writeProcThreadSelf(sub, value string) error {
	return writeProc(sub, value, func(h *procfs.Handle) (*os.File, func(), error) {
		f, closer, err := h.OpenThreadSelf(sub)
		return f, func() { closer() }, err
	})
}

// writeProcSelf writes value to /proc/self/<sub>.
func writeProcSelf(sub, value string) error {
	return writeProc(sub, value, func(h *procfs.Handle) (*os.File, func(), error) {
		f, err := h.OpenSelf(sub)
		return f, func() {}, err
	})
}

func writeProc(sub, value string, open func(*procfs.Handle) (*os.File, func(), error)) error {
	h, err := procfs.OpenProcRoot()
	if err != nil {
		return fmt.Errorf("open procfs: %w", err)
	}
	defer h.Close()
	f, done, err := open(h)
	if err != nil {
		return err
	}
	defer done()
	defer f.Close()
	w, err := pathrs.Reopen(f, unix.O_WRONLY)
	if err != nil {
		return err
	}
	_, err = w.WriteString(value)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteOOMScoreAdj sets the calling process' oom_score_adj.
func WriteOOMScoreAdj(v string) error { return writeProcSelf("oom_score_adj", v) }

// ReadProcSelf reads /proc/self/<sub>.
func ReadProcSelf(sub string) (string, error) {
	h, err := procfs.OpenProcRoot()
	if err != nil {
		return "", fmt.Errorf("open procfs: %w", err)
	}
	defer h.Close()
	f, err := h.OpenSelf(sub)
	if err != nil {
		return "", err
	}
	defer f.Close()
	r, err := pathrs.Reopen(f, unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer r.Close()
	b := make([]byte, 4096)
	n, err := r.Read(b)
	return string(b[:n]), err
}

package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// defaultBigDirs are the host directories of the big image, one layer
// each, all from the Go installation (so the image changes only with the
// Go release, not with the packages installed): a few large binaries
// (bin, pkg), Go's source tree (12,000 files) and its test tree (3,700
// small files). About 260 MB.
var defaultBigDirs = []string{"/usr/local/go/bin", "/usr/local/go/pkg", "/usr/local/go/src", "/usr/local/go/test"}

// hostLayer is a layer holding the host directory root at its own path
// (without the leading slash), with its parent directories. Entries come
// in lexical order; owners are root and times are epoch, so the layer
// depends only on the names, modes and contents below root.
func hostLayer(root string) (layer, error) {
	root = filepath.Clean(root)
	if !filepath.IsAbs(root) || root == "/" {
		return layer{}, fmt.Errorf("big: %q: want an absolute directory below /", root)
	}
	var es []entry
	rel := strings.TrimPrefix(root, "/")
	// Parent directories first, e.g. usr, usr/local, usr/local/go.
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		es = append(es, dir(strings.Join(parts[:i], "/"), 0o755, 0, 0))
	}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "/")
		fi, err := de.Info()
		if err != nil {
			return err
		}
		perm := int64(fi.Mode().Perm())
		if fi.Mode()&fs.ModeSetuid != 0 {
			perm |= 0o4000
		}
		if fi.Mode()&fs.ModeSetgid != 0 {
			perm |= 0o2000
		}
		if fi.Mode()&fs.ModeSticky != 0 {
			perm |= 0o1000
		}
		switch {
		case de.IsDir():
			es = append(es, dir(name, perm, 0, 0))
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e := file(name, perm, 0, 0, "")
			e.hdr.Size, e.body = int64(len(b)), b
			es = append(es, e)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			es = append(es, symlink(name, target))
		}
		// Sockets, fifos and devices are left out.
		return nil
	})
	if err != nil {
		return layer{}, fmt.Errorf("big: %w", err)
	}
	return layer{comment: "host " + root, entries: es}, nil
}

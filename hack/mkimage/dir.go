package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// dirImage describes an image built from root filesystem directories
// (-kind dir): each directory is one layer, lowest first.
type dirImage struct {
	layers     []string
	user       string
	entrypoint []string
	cmd        []string
	workdir    string
	env        []string
}

// parseArgv reads an entrypoint or command given as a JSON array of strings;
// an empty string means none.
func parseArgv(flagName, s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("-%s wants a JSON array of strings: %w", flagName, err)
	}
	return v, nil
}

// dirLayer turns the tree under root into a layer. Entries come in lexical
// order; owners, modes, symlink targets and hard links are kept as they are
// on disk, every time is set to epoch and user/group names are dropped, so
// the layer depends only on the tree's content and metadata.
func dirLayer(root string) (layer, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]string{}
	var es []entry
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat_t", path)
		}
		var link string
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid = int(st.Uid), int(st.Gid)
		h.Uname, h.Gname = "", ""
		h.ModTime, h.AccessTime, h.ChangeTime = epoch, epoch, epoch
		h.Format = tar.FormatPAX
		h.PAXRecords = nil
		var body []byte
		switch {
		case fi.Mode().IsRegular():
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := seen[key]; ok && st.Nlink > 1 {
				h.Typeflag = tar.TypeLink
				h.Linkname = first
				h.Size = 0
				break
			}
			seen[key] = h.Name
			if body, err = os.ReadFile(path); err != nil {
				return err
			}
		case fi.IsDir(), fi.Mode()&fs.ModeSymlink != 0:
		default:
			return fmt.Errorf("%s: unsupported file type %v", path, fi.Mode().Type())
		}
		es = append(es, entry{hdr: *h, body: body})
		return nil
	})
	if err != nil {
		return layer{}, err
	}
	return layer{comment: "rootfs " + filepath.Base(root), entries: es}, nil
}

// writeDir writes an image whose layers are the directories of img.
func writeDir(name, out string, img dirImage) error {
	if len(img.layers) == 0 {
		return fmt.Errorf("-kind dir needs -rootfs DIR[,DIR...]")
	}
	var ls []layer
	for _, d := range img.layers {
		l, err := dirLayer(strings.TrimSpace(d))
		if err != nil {
			return err
		}
		ls = append(ls, l)
	}
	archive, err := imageArchiveConfig(name, ls, gzip.BestCompression, imageConfig{
		user:       img.user,
		entrypoint: img.entrypoint,
		cmd:        img.cmd,
		workdir:    img.workdir,
		env:        img.env,
	})
	if err != nil {
		return err
	}
	return writeArchive(out, archive)
}

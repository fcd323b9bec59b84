package snapshotter

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// fsNoCOW is FS_NOCOW_FL, btrfs' "C" file attribute.
const fsNoCOW = 0x00800000

// noCOWMetadata makes the metadata file at path a no-copy-on-write file
// before bolt opens it. bolt overwrites its pages in place and orders its
// writes with two fdatasyncs per commit, as it does on ext4 or xfs; on a
// copy-on-write file each fdatasync must also log the new extents of every
// page written. btrfs sets the attribute only on an empty file, so an
// existing copy-on-write file is copied into a new one that replaces it.
func noCOWMetadata(path string) error {
	os.Remove(path + ".nocow") // left by a crash during an earlier copy
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsNoCOW != 0 {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags|fsNoCOW)
	}
	return copyNoCOW(f, path)
}

// copyNoCOW replaces path, open as f, by a no-copy-on-write copy.
func copyNoCOW(f *os.File, path string) error {
	tmp := path + ".nocow"
	err := func() error {
		t, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		defer t.Close()
		flags, err := unix.IoctlGetInt(int(t.Fd()), unix.FS_IOC_GETFLAGS)
		if err == nil {
			err = unix.IoctlSetPointerInt(int(t.Fd()), unix.FS_IOC_SETFLAGS, flags|fsNoCOW)
		}
		if err != nil {
			return err
		}
		if _, err := io.Copy(t, f); err != nil {
			return err
		}
		return t.Sync()
	}()
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("copying %s into a no-copy-on-write file: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

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

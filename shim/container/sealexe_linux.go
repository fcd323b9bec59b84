package container

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Helpers run HelperName when it sits next to this process' binary (a
// small program, cmd/tupper-helper), and this binary itself otherwise.
// Every container start and exec pays one helper start-up, most of it the
// initialisation of the Go runtime and of every linked package, page
// faults included; the helper links about half the packages the shim does
// (no containerd API, gRPC or net/http).
//
// A container must not be able to write the helper's binary: a program
// whose interpreter is #!/proc/self/exe, exec'd by a helper, runs the
// helper's binary inside the container, and through /proc/<pid>/exe a
// process of the container could reopen that binary for writing once it
// is no longer busy, and so replace the host's (CVE-2019-5736). So
// helpers are exec'd from a sealed view of the binary: a read-only
// overlayfs whose layers are all lower ones, mounted only as an fd (never
// attached anywhere), with no copy of the binary; where overlayfs is
// unavailable, a sealed memfd copy (which costs the binary's size in
// memory per process).

// sealedExeFd is above any fd a helper is given (shim/container passes
// a few dozen at most): os/exec moves ExtraFiles onto 3, 4, ... before
// the execve of /proc/self/fd/<this>, which must still be the binary.
const sealedExeFd = 200

// HelperName is the helper binary looked for next to this process' own.
const HelperName = "tupper-helper"

// sealedExe returns the path to exec helpers from, /proc/self/fd/N, made
// once per process.
var sealedExe = sync.OnceValues(func() (string, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return "", err
	}
	bin := helperBinary(exe)
	f, err := sealedOverlay(bin)
	if err != nil {
		if f, err = sealedMemfd(bin); err != nil {
			return "", err
		}
	}
	defer f.Close()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, sealedExeFd)
	if err != nil {
		return "", fmt.Errorf("sealed helper binary: %w", err)
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), nil
})

// helperBinary is the binary helpers run for a process whose own is exe:
// HelperName in the same directory if that is an executable regular file,
// exe itself otherwise (tests, or a shim installed alone). A symlink is
// resolved here: the sealed overlay opens the last component without
// following it.
func helperBinary(exe string) string {
	sibling, err := filepath.EvalSymlinks(filepath.Join(filepath.Dir(exe), HelperName))
	if err != nil {
		return exe
	}
	if fi, err := os.Stat(sibling); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return sibling
	}
	return exe
}

// sealedOverlay opens the binary bin through a read-only overlayfs of its
// directory. Overlayfs refuses writes when it has no upper layer, which
// needs at least two lower ones: the second is an empty directory, made
// and removed here (the mount keeps its own reference).
func sealedOverlay(bin string) (*os.File, error) {
	dir, name := filepath.Split(bin)
	empty, err := os.MkdirTemp("", "tupper-seal-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(empty)
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	escape := strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace
	if err := unix.FsconfigSetString(fsfd, "lowerdir", escape(filepath.Clean(dir))+":"+escape(empty)); err != nil {
		return nil, fmt.Errorf("overlay lowerdir %s: %w", dir, err)
	}
	_ = unix.FsconfigSetString(fsfd, "xino", "off") // only spares a log line
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, fmt.Errorf("create overlay: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID)
	if err != nil {
		return nil, fmt.Errorf("fsmount overlay: %w", err)
	}
	defer unix.Close(mfd)
	fd, err := unix.Openat(mfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s in the sealed overlay: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "sealed-exe"), nil
}

// sealedMemfd copies the binary bin into a memfd and seals it against
// every change.
func sealedMemfd(bin string) (*os.File, error) {
	src, err := os.Open(bin)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("tupper-helper", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if err == unix.EINVAL { // kernels before 6.3 know no MFD_EXEC
		fd, err = unix.MemfdCreate("tupper-helper", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd for the helper binary: %w", err)
	}
	f := os.NewFile(uintptr(fd), "sealed-exe")
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("copy the helper binary: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal the helper binary: %w", err)
	}
	return f, nil
}

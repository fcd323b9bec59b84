package snapshotter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// github.com/containerd/btrfs/v2 has no quota, sync or fs-info calls, so the few
// ioctls tupper needs beyond subvolume create/snapshot are declared here. The
// numbers are _IOC(dir, 0x94, nr, size) from <linux/btrfs.h>.
const (
	iocSync         = 0x9408     // _IO(0x94, 8)
	iocSnapDestroy  = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	iocWaitSync     = 0x40089416 // _IOW(0x94, 22, __u64)
	iocStartSync    = 0x80089418 // _IOR(0x94, 24, __u64)
	iocSubvolGetfl  = 0x80089419 // _IOR(0x94, 25, __u64)
	iocSubvolSetfl  = 0x4008941a // _IOW(0x94, 26, __u64)
	iocFSInfo       = 0x8400941f // _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)
	iocQuotaCtl     = 0xc0109428 // _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)
	iocQgroupLimit  = 0x8030942b // _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)
	quotaCtlEnable  = 1
	quotaCtlSimple  = 4 // BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA, Linux >= 6.7
	qgroupLimitExcl = 1 << 1
	subvolReadOnly  = 1 << 1 // BTRFS_SUBVOL_RDONLY
	pathNameMax     = 4087
)

// QuotaMode says how Usage is computed and whether max-size can be enforced.
type QuotaMode string

const (
	// QuotaAuto enables simple quotas where the kernel has them, classic
	// qgroups otherwise, and falls back to walking files when neither works.
	QuotaAuto QuotaMode = "auto"
	// QuotaSimple requires btrfs simple quotas (squota, Linux >= 6.7).
	QuotaSimple QuotaMode = "simple"
	// QuotaClassic requires classic btrfs qgroups.
	QuotaClassic QuotaMode = "classic"
	// QuotaOff never touches quotas: Usage walks files, max-size is refused.
	QuotaOff QuotaMode = "off"
)

// ParseQuotaMode checks a configured quota mode.
func ParseQuotaMode(s string) (QuotaMode, error) {
	switch m := QuotaMode(s); m {
	case QuotaAuto, QuotaSimple, QuotaClassic, QuotaOff:
		return m, nil
	case "":
		return QuotaAuto, nil
	}
	return "", fmt.Errorf("unknown quota mode %q (want auto, simple, classic or off)", s)
}

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

func withDir(path string, fn func(*os.File) error) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return fn(f)
}

// filesystemUUID returns the btrfs filesystem id, which names its /sys/fs/btrfs directory.
func filesystemUUID(path string) (string, error) {
	var args [1024]byte
	err := withDir(path, func(f *os.File) error { return ioctl(f, iocFSInfo, unsafe.Pointer(&args[0])) })
	if err != nil {
		return "", fmt.Errorf("BTRFS_IOC_FS_INFO on %s: %w", path, err)
	}
	u := args[16:32]
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}

// syncFilesystem commits the current btrfs transaction, which is when quota
// group counters are brought up to date.
func syncFilesystem(path string) error {
	return withDir(path, func(f *os.File) error { return ioctl(f, iocSync, nil) })
}

// haveSimpleQuota reports whether the kernel's btrfs has simple quotas
// (squota, Linux 6.7).
func haveSimpleQuota() bool {
	_, err := os.Stat("/sys/fs/btrfs/features/simple_quota")
	return err == nil
}

// commitTransaction commits the running btrfs transaction and waits for it,
// without first writing out dirty file data as syncFilesystem does: what
// it makes durable is metadata, such as a new subvolume.
func commitTransaction(path string) error {
	return withDir(path, func(f *os.File) error {
		var transid uint64
		if err := ioctl(f, iocStartSync, unsafe.Pointer(&transid)); err != nil {
			return err
		}
		return ioctl(f, iocWaitSync, unsafe.Pointer(&transid))
	})
}

// enableQuota turns on simple or classic quotas for the whole filesystem.
func enableQuota(path string, simple bool) error {
	args := struct{ cmd, status uint64 }{cmd: quotaCtlEnable}
	if simple {
		args.cmd = quotaCtlSimple
	}
	return withDir(path, func(f *os.File) error { return ioctl(f, iocQuotaCtl, unsafe.Pointer(&args)) })
}

// limitExclusive caps the data that only this subvolume references, which is
// what a container writes; a limit on referenced data would also count the
// image layers it shares with its parent.
func limitExclusive(path string, subvolID, bytes uint64) error {
	args := struct {
		qgroupID                                uint64
		flags, maxRfer, maxExcl, rsvRfer, rsvEx uint64
	}{qgroupID: subvolID, flags: qgroupLimitExcl, maxExcl: bytes}
	return withDir(path, func(f *os.File) error { return ioctl(f, iocQgroupLimit, unsafe.Pointer(&args)) })
}

// destroySubvolume deletes one subvolume without looking inside it, so removal
// costs the same for an empty layer and a million-file one. The kernel frees
// its extents in the background.
func destroySubvolume(path string) error {
	dir, name := filepath.Split(path)
	if len(name) > pathNameMax {
		return fmt.Errorf("subvolume name %q too long", name)
	}
	var args struct {
		fd   int64
		name [pathNameMax + 1]byte
	}
	copy(args.name[:], name)
	return withDir(dir, func(f *os.File) error { return ioctl(f, iocSnapDestroy, unsafe.Pointer(&args)) })
}

// readOnly reports whether the subvolume at path is marked read-only.
func readOnly(path string) (bool, error) {
	var flags uint64
	err := withDir(path, func(f *os.File) error { return ioctl(f, iocSubvolGetfl, unsafe.Pointer(&flags)) })
	return flags&subvolReadOnly != 0, err
}

// setReadOnly marks the subvolume at path read-only. The kernel commits a
// transaction for it.
func setReadOnly(path string) error {
	var flags uint64
	return withDir(path, func(f *os.File) error {
		if err := ioctl(f, iocSubvolGetfl, unsafe.Pointer(&flags)); err != nil || flags&subvolReadOnly != 0 {
			return err
		}
		flags |= subvolReadOnly
		return ioctl(f, iocSubvolSetfl, unsafe.Pointer(&flags))
	})
}

// quotaState reads /sys/fs/btrfs/<uuid>/qgroups: "" when quotas are off,
// otherwise the kernel's mode ("qgroup" or "squota").
type quotaSysfs struct{ dir string }

func (q quotaSysfs) mode() (string, error) {
	if _, err := os.Stat(q.dir); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	b, err := os.ReadFile(filepath.Join(q.dir, "mode"))
	if errors.Is(err, os.ErrNotExist) {
		return "qgroup", nil // kernels before simple quotas have no mode file
	}
	return strings.TrimSpace(string(b)), err
}

func (q quotaSysfs) inconsistent() bool {
	b, err := os.ReadFile(filepath.Join(q.dir, "inconsistent"))
	return err == nil && strings.TrimSpace(string(b)) != "0"
}

// usage is what subvolume id's own quota group is charged: extents only it
// owns ("exclusive", brought up to date when a transaction commits) plus
// the data reserved for writes not yet committed ("rsv_data"). Together
// they are current at any moment, with no sync; the reservation is held
// until the commit that accounts the data. Without rsv_data (kernels before
// 5.10) it is exclusive alone, and reserved reports false.
func (q quotaSysfs) usage(subvolID uint64) (bytes int64, reserved bool, err error) {
	excl, err := q.readCounter(subvolID, "exclusive")
	if err != nil {
		return 0, false, err
	}
	rsv, err := q.readCounter(subvolID, "rsv_data")
	if err != nil {
		return excl, false, nil
	}
	return excl + rsv, true, nil
}

func (q quotaSysfs) maxExclusive(subvolID uint64) (int64, error) {
	return q.readCounter(subvolID, "max_exclusive")
}

func (q quotaSysfs) readCounter(subvolID uint64, name string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(q.dir, fmt.Sprintf("0_%d", subvolID), name))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

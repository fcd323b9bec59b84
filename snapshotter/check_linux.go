package snapshotter

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// LoopbackHint tells users without btrfs how to get one for tupper.
const LoopbackHint = "make a loopback btrfs with: hack/btrfs-loop.sh up /var/lib/containerd-tupper.img 20G /var/lib/containerd-tupper"

var fsNames = map[int64]string{
	unix.EXT4_SUPER_MAGIC:      "ext4",
	unix.XFS_SUPER_MAGIC:       "xfs",
	unix.TMPFS_MAGIC:           "tmpfs",
	unix.OVERLAYFS_SUPER_MAGIC: "overlayfs",
	0x2fc12fc1:                 "zfs",
	unix.NFS_SUPER_MAGIC:       "nfs",
}

// Supported returns nil if root is on btrfs, and otherwise an error that says
// what root is on and how to make a btrfs for it.
func Supported(root string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return fmt.Errorf("checking filesystem of snapshotter root %s: %w", root, err)
	}
	if st.Type == unix.BTRFS_SUPER_MAGIC {
		return nil
	}
	name, ok := fsNames[int64(st.Type)]
	if !ok {
		name = fmt.Sprintf("filesystem type %#x", st.Type)
	}
	return fmt.Errorf("snapshotter root %s is on %s, not btrfs; tupper stores layers as btrfs subvolumes, so %s: %w",
		root, name, LoopbackHint, errdefs.ErrFailedPrecondition)
}

// existingAncestor is root or its nearest existing parent, so that a wrong
// root is refused before anything is created there.
func existingAncestor(root string) string {
	p := filepath.Clean(root)
	for {
		if _, err := os.Stat(p); err == nil || p == filepath.Dir(p) {
			return p
		}
		p = filepath.Dir(p)
	}
}

package snapshotter

import (
	"fmt"
	"path/filepath"

	"github.com/tupper/tupper/internal/mountpoint"
	"golang.org/x/sys/unix"
)

// privateRoot makes the mount that holds root private. containerd idmaps a
// snapshot's bind mount by mounting an idmapped clone on top of it; where
// root's mount is shared (systemd makes every mount shared), the bind is
// a peer of it and that clone would propagate onto the snapshot's own
// subvolume, which would then show the mapped ids to everyone. A private
// mount keeps each bind to its target. The host's / is never changed: a
// root on it gets a bind mount of its own first.
func privateRoot(root string) error {
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return err
	}
	mp, err := mountpoint.Of(real)
	if err != nil {
		return err
	}
	if mp == "/" {
		if err := unix.Mount(root, root, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", root, err)
		}
		mp = root
	}
	if err := unix.Mount("", mp, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the mount %s private: %w", mp, err)
	}
	return nil
}

package bundle

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// UnmountRootfs unmounts a container's rootfs, and what is mounted below
// it, once nothing of the container runs. containerd's unmount already
// retries a busy mount for a while; a mount still busy after that (a
// process outside the container holding a file or directory in it, or a
// propagated copy in a namespace not yet freed) is detached instead, with
// a warning that names the error: left mounted it would stay until the
// host reboots, since nobody unmounts it later, and would keep the
// snapshot from being removed. It reports whether a plain unmount did it.
func UnmountRootfs(ctx context.Context, target string) bool {
	err := mount.UnmountRecursive(target, 0)
	if err == nil {
		return true
	}
	log.G(ctx).WithError(err).WithField("rootfs", target).Warn("rootfs still busy after retries; detaching it")
	if derr := mount.UnmountRecursive(target, unix.MNT_DETACH); derr != nil {
		log.G(ctx).WithError(fmt.Errorf("detach: %w", derr)).WithField("rootfs", target).Error("rootfs left mounted")
	}
	return false
}

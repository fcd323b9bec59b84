package testutil

import (
	"strings"

	"github.com/moby/sys/mountinfo"
)

// MountsUnder lists the mount points at dir or below it, in mount order
// (parents before children), from /proc/self/mountinfo.
func MountsUnder(dir string) ([]string, error) {
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.Mountpoint != dir && !strings.HasPrefix(m.Mountpoint, dir+"/"), false
	})
	if err != nil {
		return nil, err
	}
	mps := make([]string, len(mounts))
	for i, m := range mounts {
		mps[i] = m.Mountpoint
	}
	return mps, nil
}

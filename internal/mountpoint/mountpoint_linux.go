// Package mountpoint finds the mount a path lies on.
package mountpoint

import (
	"fmt"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// Of returns the mount point that path lies on: the longest mount point
// that is path or one of its parent directories. path must be clean,
// absolute and free of symlinks.
func Of(path string) (string, error) {
	// Not mountinfo.ParentsFilter: a plain string prefix, it takes /a/b
	// for a mount point above /a/bc.
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		mp := m.Mountpoint
		return path != mp && mp != "/" && !strings.HasPrefix(path, mp+"/"), false
	})
	if err != nil {
		return "", err
	}
	best := ""
	for _, m := range mounts {
		if len(m.Mountpoint) > len(best) {
			best = m.Mountpoint
		}
	}
	if best == "" {
		return "", fmt.Errorf("no mount point above %s", path)
	}
	return best, nil
}

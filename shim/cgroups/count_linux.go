package cgroups

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// OOMKills returns how many processes the kernel's OOM killer has killed
// in the cgroup so far (oom_kill of v1 memory.oom_control, v2
// memory.events). The kernel counts a kill before it sends the SIGKILL,
// so once the victim has been reaped the count already includes it: the
// shim compares it with what it has reported to put TaskOOM before the
// victim's TaskExit.
func (m *Manager) OOMKills() (uint64, error) {
	file := filepath.Join(mountpoint, "memory", m.path, "memory.oom_control")
	if m.v2 != nil {
		file = filepath.Join(mountpoint, m.path, "memory.events")
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "oom_kill" {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s has no oom_kill counter (kernel older than 4.13?)", file)
}

// IsSystemdPath reports whether an OCI cgroupsPath is in the systemd
// driver's slice:prefix:name form. The two forms do not overlap, so the
// form alone tells which driver made a cgroup, e.g. when `shim delete`
// has nothing but the bundle's config.json to go by.
func IsSystemdPath(cgroupsPath string) bool {
	parts := strings.Split(cgroupsPath, ":")
	return len(parts) == 3 && strings.HasSuffix(parts[0], ".slice")
}

// DefaultPath is the cgroupsPath used for a container whose spec has none
// but asks for resources: /tupper/<id>, or system.slice:tupper:<id> with
// the systemd driver.
func DefaultPath(id string, systemd bool) string {
	if systemd {
		return "system.slice:tupper:" + id
	}
	return "/tupper/" + id
}

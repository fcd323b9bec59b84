package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tupper/tupper/internal/testutil"
)

// With harness.EnvCgroupDriver=systemd the CRI tests run with containerd
// set up as kubeadm does: SystemdCgroup = true for both handlers, and pods
// whose cgroup parent is a slice, so that CRI gives every container the
// cgroupsPath <slice>:cri-containerd:<id>, a transient scope. The default,
// cgroupfs, gives pods a plain parent directory.

// podCgroupParent is the cgroup parent of a test pod: a slice of its own
// with the systemd driver (no dashes, which would nest it), given as the
// kubelet gives one, its expanded path (/kubepods.slice/kubepods-pod1.slice;
// containerd reads pod stats from that path), a directory otherwise.
// Either is removed when the test ends.
func podCgroupParent(t *testing.T, systemd bool, n int64) string {
	if !systemd {
		uid := fmt.Sprintf("tupper-it-%d", n)
		t.Cleanup(func() { testutil.RemoveCgroups(t, uid) })
		return "/" + uid
	}
	slice := fmt.Sprintf("tpit%d.slice", n%1e9)
	t.Cleanup(func() {
		if out, err := exec.Command("systemctl", "stop", slice).CombinedOutput(); err != nil {
			t.Errorf("systemctl stop %s: %v %s", slice, err, out)
		}
	})
	return "/" + slice
}

// cgroupLeftovers lists what is left of the containers' cgroups: their
// directories (v1 hierarchies, v2 below a parent, systemd scopes) and,
// with systemd, their scope units in any state.
func cgroupLeftovers(ids ...string) []string {
	var left []string
	for _, id := range ids {
		for _, g := range []string{"/sys/fs/cgroup/*/*/" + id + "*", "/sys/fs/cgroup/*/" + id + "*", "/sys/fs/cgroup/*/cri-containerd-" + id + "*"} {
			m, _ := filepath.Glob(g)
			left = append(left, m...)
		}
		if _, err := os.Stat("/run/systemd/system"); err != nil {
			continue
		}
		out, _ := exec.Command("systemctl", "list-units", "--all", "--plain", "--no-legend", "cri-containerd-"+id+".scope").Output()
		if s := strings.TrimSpace(string(out)); s != "" {
			left = append(left, "unit "+s)
		}
	}
	return left
}

package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// RemoveCgroups removes the /<namespace> cgroup (and any container
// cgroup a killed runtime left under it) from every hierarchy. Runtimes
// delete a container's own cgroup, not the namespace-level parent.
func RemoveCgroups(t testing.TB, namespace string) {
	t.Helper()
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + namespace)
	if st, err := os.Stat("/sys/fs/cgroup/" + namespace); err == nil && st.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/"+namespace) // unified v2 host
	}
	for _, root := range roots {
		var children []string
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			if e.IsDir() {
				children = append(children, filepath.Join(root, e.Name()))
			}
		}
		for _, c := range append(children, root) {
			if err := os.Remove(c); err != nil && !os.IsNotExist(err) {
				t.Errorf("cleanup: removing cgroup %s: %v", c, err)
			}
		}
	}
}

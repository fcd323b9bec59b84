package manager

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestGroup(t *testing.T) {
	dir := t.TempDir()
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(dir)
	for _, tc := range []struct {
		annotations string
		want        string
	}{
		{`{}`, "c1"},
		{`{"io.kubernetes.cri.sandbox-id": "pod"}`, "pod"},
		{`{"io.kubernetes.cri.sandbox-id": "pod", "io.containerd.tupper.v2.group": "g"}`, "g"},
		{`{"io.containerd.runc.v2.group": "runc-only"}`, "c1"},
	} {
		os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"annotations": `+tc.annotations+`}`), 0o644)
		if got, err := group("c1"); err != nil || got != tc.want {
			t.Errorf("%s: group %q %v, want %q", tc.annotations, got, err, tc.want)
		}
	}
}

func TestFeatures(t *testing.T) {
	f := Features()
	ns := strings.Join(f.Linux.Namespaces, " ")
	for _, want := range []string{"pid", "network", "mount", "ipc", "uts", "cgroup", "user", "time"} {
		if !strings.Contains(" "+ns+" ", " "+want+" ") {
			t.Errorf("does not advertise %s namespaces: %s", want, ns)
		}
	}
	if idm := f.Linux.MountExtensions.IDMap; idm == nil || idm.Enabled == nil || !*idm.Enabled {
		t.Error("does not advertise idmapped spec mounts")
	}
	// Recursive read-only mounts are implemented (mount_setattr), and CRI
	// turns them on when it sees "rro".
	if !slices.Contains(f.MountOptions, "rro") || !slices.Contains(f.MountOptions, "rnosuid") {
		t.Errorf("recursive mount options missing: %v", f.MountOptions)
	}
	if c := f.Linux.Cgroup; c == nil || c.V1 == nil || !*c.V1 || c.V2 == nil || !*c.V2 || c.Systemd == nil || !*c.Systemd || c.SystemdUser == nil || *c.SystemdUser {
		t.Errorf("cgroup features %+v", c)
	}
	if len(f.Linux.Capabilities) < 41 || f.Linux.Capabilities[0] != "CAP_CHOWN" {
		t.Errorf("capabilities %v", f.Linux.Capabilities)
	}
}

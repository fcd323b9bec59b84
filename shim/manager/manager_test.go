package manager

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	optionspb "github.com/tupper/tupper/proto/options"
	"github.com/tupper/tupper/shim/bundle"
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
		if got, err := group("c1", nil); err != nil || got != tc.want {
			t.Errorf("%s: group %q %v, want %q", tc.annotations, got, err, tc.want)
		}
		if got, err := group("c1", &optionspb.Options{ShimGrouping: "container"}); err != nil || got != tc.want {
			t.Errorf("%s, ShimGrouping container: group %q %v, want %q", tc.annotations, got, err, tc.want)
		}
		// One shim per namespace whatever the annotations say: the
		// socket address is made per namespace.
		if got, err := group("c1", &optionspb.Options{ShimGrouping: "namespace"}); err != nil || got != "tupper-namespace-shim" {
			t.Errorf("%s, ShimGrouping namespace: group %q %v", tc.annotations, got, err)
		}
	}
	if _, err := group("c1", &optionspb.Options{ShimGrouping: "node"}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `"node"`) {
		t.Errorf("ShimGrouping node: %v, want an invalid argument naming it", err)
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

// TestStopAfterCleanDelete: `shim delete`, which containerd runs after
// every Delete, only reports the recorded exit once the shim's Delete
// recorded that it cleaned up; without that record it kills what is left.
func TestStopAfterCleanDelete(t *testing.T) {
	for _, cleaned := range []bool{true, false} {
		t.Run(fmt.Sprintf("cleaned=%v", cleaned), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "c1")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			t.Chdir(dir)
			// A live process recorded as the init, to see whether Stop
			// went on to kill it.
			leftover := exec.Command("sleep", "100")
			if err := leftover.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { leftover.Wait(); close(exited) }()
			defer leftover.Process.Kill()
			if err := bundle.WriteInit(dir, leftover.Process.Pid); err != nil {
				t.Fatal(err)
			}
			at := time.Now().Truncate(time.Second)
			if err := bundle.WriteExit(dir, bundle.Exit{Pid: 4242, Status: 7, ExitedAt: at}); err != nil {
				t.Fatal(err)
			}
			if cleaned {
				if err := bundle.MarkCleanedUp(dir, []byte{0x10, 0x07}); err != nil {
					t.Fatal(err)
				}
			}
			st, err := New("io.containerd.tupper.v2").Stop(context.Background(), "c1")
			if err != nil || st.Pid != 4242 || st.ExitStatus != 7 || !st.ExitedAt.Equal(at) {
				t.Fatalf("Stop: %+v, %v", st, err)
			}
			if cleaned {
				if err := leftover.Process.Signal(syscall.Signal(0)); err != nil {
					t.Errorf("Stop killed the recorded init although Delete had cleaned up: %v", err)
				}
				return
			}
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				t.Error("Stop left the recorded init running")
			}
		})
	}
}

package shim

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// With harness.EnvCgroupDriver=systemd the suite runs with tupper's
// systemd cgroup driver, as kubeadm sets containerd up (SystemdCgroup =
// true in the runtime options): every container of the env gets the
// cgroupsPath <slice>:tshim:<id>, a transient scope tshim-<id>.scope in a
// slice of the env's own. The default, cgroupfs, keeps ctr's
// /<namespace>/<id>.

// scopePrefix is the prefix of every container's scope (systemd driver),
// the same for tupper and runc so that their views can be compared.
const scopePrefix = "tshim"

// withCgroupsPath gives a `ctr run` of an image container the systemd
// driver's cgroupsPath (and runc its systemd driver); other commands, and
// everything with the cgroupfs driver, are left as they are. A dumped spec
// keeps ctr's path: it is run with --config, without runtime options.
func (e *env) withCgroupsPath(args []string) []string {
	if e.slice == "" || len(args) == 0 || args[0] != "run" || slices.Contains(args, "--cgroup") ||
		slices.Contains(args, "--config") || slices.Contains(args, "--dump-config") {
		return args
	}
	// Every image the suite runs is one it built, named tupper.local/...
	// (harness.ImageName); the argument after it is the container's id.
	i := slices.IndexFunc(args, func(a string) bool { return strings.HasPrefix(a, "tupper.local/") })
	if i < 0 || i+1 >= len(args) {
		return args
	}
	extra := []string{"--cgroup", e.slice + ":" + scopePrefix + ":" + args[i+1]}
	if slices.Contains(args, "io.containerd.runc.v2") {
		extra = append(extra, "--runc-systemd-cgroup")
	}
	return append(append([]string{"run"}, extra...), args[1:]...)
}

// containerCgroup is the container's cgroup directory on v2 (systemd
// driver: its scope), or in the v1 controller's hierarchy.
func (e *env) containerCgroup(controller, id string) string {
	if e.slice != "" {
		return filepath.Join("/sys/fs/cgroup", e.slice, scopePrefix+"-"+id+".scope")
	}
	if e.cgroupV2() {
		controller = ""
	}
	return filepath.Join("/sys/fs/cgroup", controller, e.Namespace, id)
}

// leftUnits lists the systemd units (scopes) of a container that are
// still loaded, in any state; none with the cgroupfs driver.
func (e *env) leftUnits(id string) []string {
	if e.slice == "" {
		return nil
	}
	unit := scopePrefix + "-" + id + ".scope"
	out, err := exec.Command("systemctl", "list-units", "--all", "--plain", "--no-legend", unit).CombinedOutput()
	if err != nil {
		e.t.Fatalf("systemctl list-units %s: %v %s", unit, err, out)
	}
	var left []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			left = append(left, l)
		}
	}
	return left
}

// stopSlice stops the env's slice (what a test left in it goes with it)
// and forgets its failed scopes.
func (e *env) stopSlice() {
	if e.slice == "" {
		return
	}
	if out, err := exec.Command("systemctl", "stop", e.slice).CombinedOutput(); err != nil {
		e.t.Errorf("systemctl stop %s: %v %s", e.slice, err, out)
	}
	exec.Command("systemctl", "reset-failed", e.slice, scopePrefix+"-*.scope").Run()
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", e.slice)); err == nil {
		d := filepath.Join("/sys/fs/cgroup", e.slice)
		e.t.Errorf("slice %s left its cgroup %s", e.slice, d)
	}
}

// sliceName is the env's slice: no dashes, which would nest it.
func sliceName(n int64) string { return fmt.Sprintf("tshim%d.slice", n%1e6) }

// keptAfterReload checks, with the systemd driver, that a limit Update
// set survives `systemctl daemon-reload`, after which systemd rewrites
// every unit's cgroup files from its properties: the limit must be a
// property of the scope too, not only a file.
func (e *env) keptAfterReload(t *testing.T, id, property, file, want string) {
	t.Helper()
	if e.slice == "" {
		return
	}
	unit := scopePrefix + "-" + id + ".scope"
	if out, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
		t.Fatalf("systemctl daemon-reload: %v %s", err, out)
	}
	// A request after the reload: systemd has dispatched its queued
	// cgroup writes before it answers.
	out, err := exec.Command("systemctl", "show", "--value", "-p", property, unit).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != want {
		t.Fatalf("%s of %s: %q %v, want %s", property, unit, out, err, want)
	}
	b, err := os.ReadFile(e.cgroupPath("", id, file))
	if err != nil || strings.TrimSpace(string(b)) != want {
		t.Fatalf("%s after daemon-reload: %q %v, want %s", file, b, err, want)
	}
}

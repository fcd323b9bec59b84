// Package cgroups puts a container into its cgroup and enforces, measures,
// updates, freezes and deletes it, on cgroup v1 (and hybrid) hosts and on the
// unified v2 hierarchy, with the cgroupfs or the systemd driver. Which
// hierarchy is used follows what the host mounts. It knows OCI specs but
// nothing of the shim.
package cgroups

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Manager is one container's cgroup.
type Manager struct {
	path string // as the host sees it, e.g. /default/web or /kubepods.slice/.../cri-containerd-x.scope
	v1   cgroup1.Cgroup
	v2   *cgroup2.Manager
	// v1Dirs are the cgroup's directories in the v1 hierarchies, and v2Dir
	// says that the cgroup is mountpoint+path on v2 (cgroupfs driver only):
	// for JoinFiles and JoinDir.
	v1Dirs []string
	v2Dir  bool
	// unifiedDir is the container's cgroup in a hybrid host's v2
	// hierarchy (hybrid_linux.go), or "".
	unifiedDir string
	// unit is the container's systemd scope (systemd driver on v2).
	unit string
}

// unified reports whether the host runs the v2 hierarchy alone; on hybrid
// hosts the controllers live in v1.
func unified() bool { return cgroups.Mode() == cgroups.Unified }

// New creates the cgroup named by an OCI cgroupsPath and applies resources.
// Plain paths use the cgroupfs driver; "slice:prefix:name" needs systemd=true
// and a running systemd. pid is only used by the systemd driver on v2, which
// starts the scope with that process in it.
func New(ctx context.Context, cgroupsPath string, res *specs.LinuxResources, systemd bool, pid int) (*Manager, error) {
	if err := Check(res); err != nil {
		return nil, err
	}
	res, err := normalize(res) // Check has refused what normalize would
	if err != nil {
		return nil, err
	}
	if res == nil {
		res = &specs.LinuxResources{} // containerd/cgroups dereferences it
	}
	res = withoutKernelMemory(ctx, res)
	p, err := parsePath(cgroupsPath, systemd)
	if err != nil {
		return nil, err
	}
	if unified() {
		m, err := newV2(ctx, cgroupsPath, p, res, systemd, pid)
		if err != nil {
			return nil, err
		}
		return withPids(m, res)
	}
	path, hierarchy := cgroup1.StaticPath(p.path), cgroup1.Default
	if systemd {
		path, hierarchy = cgroup1.Slice(p.slice, p.unit), cgroup1.Systemd
	}
	cg, err := cgroup1.New(path, res, cgroup1.WithHierarchy(hierarchy))
	if err != nil {
		return nil, fmt.Errorf("creating cgroup %s: %w", cgroupsPath, err)
	}
	m := &Manager{path: p.path, v1: cg}
	if !systemd {
		for _, s := range cg.Subsystems() {
			if d, ok := s.(interface{ Path(string) string }); ok {
				m.v1Dirs = append(m.v1Dirs, d.Path(p.path))
			}
		}
	}
	if err := m.makeHybrid(systemd); err != nil {
		m.Delete()
		return nil, err
	}
	return withPids(m, res)
}

// withPids writes the pids limits containerd/cgroups leaves out
// (pidsValue); on failure the new cgroup is removed again.
func withPids(m *Manager, res *specs.LinuxResources) (*Manager, error) {
	if v, ok := pidsValue(res); ok {
		if err := writeFile(m.file("pids", "pids.max"), v); err != nil {
			m.Delete()
			return nil, fmt.Errorf("creating cgroup %s: %w", m.path, err)
		}
	}
	return m, nil
}

// newV2 makes the cgroup on the unified hierarchy. The systemd driver
// starts the scope first (systemd makes its directory), then both write
// every resource to the files, enabling the controllers on the way down.
func newV2(ctx context.Context, cgroupsPath string, p cgroupPath, res *specs.LinuxResources, systemd bool, pid int) (*Manager, error) {
	r := cgroup2.ToResources(res) // without the device rules: setDevicesV2
	if systemd {
		if err := startScope(ctx, p.slice, p.unit, pid, r); err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", cgroupsPath, err)
		}
	}
	m, err := cgroup2.NewManager(mountpoint, p.path, r)
	if err != nil {
		if systemd {
			stopScope(ctx, p.unit)
		}
		return nil, fmt.Errorf("creating cgroup %s: %w", cgroupsPath, err)
	}
	enableAllControllers(ctx, m)
	mgr := &Manager{path: p.path, v2: m, v2Dir: !systemd}
	if systemd {
		mgr.unit = p.unit
	}
	// Without its device program a container that may mknod could open
	// any device of the host, a disk included.
	if err := setDevicesV2(filepath.Join(mountpoint, p.path), res.Devices); err != nil {
		mgr.Delete()
		return nil, fmt.Errorf("creating cgroup %s: %w", cgroupsPath, err)
	}
	return mgr, nil
}

// enableAllControllers enables every controller the host has down to
// the cgroup, as runc does, not only those of the spec's resources: a
// later Update may set a limit of any kind (pids, after a container
// started without one), and Stats reads every controller. A parent that
// cannot have one (a process in it, a threaded subtree) keeps without it;
// an Update that needs it then fails naming the file.
func enableAllControllers(ctx context.Context, m *cgroup2.Manager) {
	all, err := m.RootControllers()
	if err == nil {
		err = m.ToggleControllers(all, cgroup2.Enable)
	}
	if err != nil {
		log.G(ctx).WithError(err).Debug("enabling every cgroup controller")
	}
}

// JoinsAtSpawn reports whether a new process can enter the cgroup by itself
// (JoinFiles on v1, JoinDir on v2) instead of being moved there by Add.
func (m *Manager) JoinsAtSpawn() bool { return len(m.v1Dirs) > 0 || (m.v2Dir && haveClone3()) }

// haveClone3 reports whether this process may use clone3 (5.3;
// CLONE_INTO_CGROUP since 5.7, as cgroup v2 hosts have): asked with a size
// too small for any version of its arguments, it fails with EINVAL. A
// kernel without it says ENOSYS, and a seccomp filter that denies it may
// say ENOSYS or EPERM: then Go's os/exec could not start the helper with
// it either.
var haveClone3 = sync.OnceValue(func() bool {
	_, _, errno := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
	return errno == unix.EINVAL
})

// JoinDir opens the cgroup's v2 directory, for a process to be cloned
// straight into (clone3 CLONE_INTO_CGROUP), which, like JoinFiles on v1,
// skips the global lock and grace period of moving it; on a hybrid host
// (v1 controllers, v2 mounted beside them) its v2 side. nil elsewhere.
func (m *Manager) JoinDir() (*os.File, error) {
	dir := m.unifiedDir // a hybrid host's v2 side (hybrid_linux.go)
	if m.v2Dir {
		dir = filepath.Join(mountpoint, m.path)
	}
	if dir == "" || !haveClone3() {
		return nil, nil
	}
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", m.path, err)
	}
	return f, nil
}

// JoinFiles opens the cgroup's v1 "tasks" files for a new process to
// move itself in while it is still single-threaded, by writing "0" to each
// (shim/nsenter's constructor does that in the init helper). Moving
// oneself that way skips the global threadgroup lock that writing another
// process' pid takes, whose first taking after a quiet spell waits for an
// RCU grace period (hack/README.md has what it costs), on the path of every
// container start. The files are also readable, so the process can check
// that it is listed. nil on v2 (see JoinDir) and with the systemd driver,
// which starts its scope with the pid (Add is the way in there).
func (m *Manager) JoinFiles() ([]*os.File, error) {
	if len(m.v1Dirs) == 0 {
		return nil, nil
	}
	var files []*os.File
	paths := make([]string, 0, len(m.v1Dirs)+1)
	for _, d := range m.v1Dirs {
		paths = append(paths, filepath.Join(d, "tasks"))
	}
	if m.unifiedDir != "" && !haveClone3() {
		// The hybrid v2 side (JoinDir's where clone3 is): "0" to
		// cgroup.procs moves the writer too, though through the global
		// lock that JoinDir's clone avoids.
		paths = append(paths, filepath.Join(m.unifiedDir, "cgroup.procs"))
	}
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("cgroup %s: %w", m.path, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// Load opens an existing container cgroup, e.g. to delete it after the shim
// that made it died.
func Load(cgroupsPath string, systemd bool) (*Manager, error) {
	p, err := parsePath(cgroupsPath, systemd)
	if err != nil {
		return nil, err
	}
	if unified() {
		// A systemd scope may outlive its directory (a failed unit), and
		// Delete stops it; a cgroupfs cgroup is nothing but its directory.
		if !systemd && !exists(filepath.Join(mountpoint, p.path)) {
			return nil, fmt.Errorf("cgroup %s: %w", cgroupsPath, errdefs.ErrNotFound)
		}
		m, err := cgroup2.Load(p.path)
		if err != nil {
			return nil, err
		}
		if systemd {
			return &Manager{path: p.path, v2: m, unit: p.unit}, nil
		}
		return &Manager{path: p.path, v2: m}, nil
	}
	path, hierarchy := cgroup1.StaticPath(p.path), cgroup1.Default
	if systemd {
		path, hierarchy = cgroup1.Slice(p.slice, p.unit), cgroup1.Systemd
	}
	cg, err := cgroup1.Load(path, cgroup1.WithHierarchy(hierarchy))
	if err != nil {
		if errors.Is(err, cgroup1.ErrCgroupDeleted) {
			return nil, fmt.Errorf("cgroup %s: %w", cgroupsPath, errdefs.ErrNotFound)
		}
		return nil, err
	}
	m := &Manager{path: p.path, v1: cg}
	if d := hybridDir(p.path, systemd); d != "" && exists(d) {
		m.unifiedDir = d
	}
	return m, nil
}

const mountpoint = "/sys/fs/cgroup"

// Path is the cgroup's path within the hierarchy.
func (m *Manager) Path() string { return m.path }

// Add moves a process into the cgroup (every v1 controller).
func (m *Manager) Add(pid int) error {
	if m.v2 != nil {
		return m.v2.AddProc(uint64(pid))
	}
	if err := m.v1.Add(cgroup1.Process{Pid: pid}); err != nil {
		return err
	}
	return m.addHybrid(pid)
}

// Stats returns *cgroup1/stats.Metrics or *cgroup2/stats.Metrics: the types
// containerd, CRI and the kubelet decode.
func (m *Manager) Stats() (any, error) {
	if m.v2 != nil {
		return m.v2.Stat()
	}
	return m.v1.Stat(cgroup1.IgnoreNotExist)
}

// Freeze stops every process of the container; Thaw lets them go on.
func (m *Manager) Freeze() error {
	if m.v2 != nil {
		if err := m.v2.Freeze(); err != nil {
			return err
		}
		return m.waitFrozen()
	}
	return m.v1.Freeze() // waits for FROZEN itself
}

// freezeTimeout bounds how long Freeze waits for the kernel to have frozen
// every process (runc waits as long).
const freezeTimeout = 10 * time.Second

// waitFrozen waits until the kernel reports the v2 cgroup frozen: writing
// cgroup.freeze only asks, and each process stops on its way back to user
// space. A container that does not freeze in time is thawed again, so
// that it is not left half frozen, and Freeze fails.
func (m *Manager) waitFrozen() error {
	events := filepath.Join(mountpoint, m.path, "cgroup.events")
	delay := time.Millisecond
	for deadline := time.Now().Add(freezeTimeout); ; time.Sleep(delay) {
		b, err := os.ReadFile(events)
		if err != nil {
			return err
		}
		if strings.Contains("\n"+string(b), "\nfrozen 1\n") {
			return nil
		}
		if time.Now().After(deadline) {
			m.v2.Thaw()
			return fmt.Errorf("cgroup %s did not freeze within %v", m.path, freezeTimeout)
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
}

// Thaw resumes a frozen container.
func (m *Manager) Thaw() error {
	if m.v2 != nil {
		return m.v2.Thaw()
	}
	return m.v1.Thaw()
}

// Pids lists every process in the cgroup and its children.
func (m *Manager) Pids() ([]int, error) {
	var out []int
	if m.v2 != nil {
		procs, err := m.v2.Procs(true)
		for _, p := range procs {
			out = append(out, int(p))
		}
		return out, err
	}
	procs, err := m.v1.Processes(cgroup1.Devices, true)
	for _, p := range procs {
		out = append(out, p.Pid)
	}
	return out, err
}

// KillAll SIGKILLs every process in the cgroup. On v1 it freezes the cgroup
// first so that a fork loop cannot add processes between listing and
// killing; v2 has cgroup.kill for that.
func (m *Manager) KillAll() error {
	if m.v2 != nil {
		// A cgroup whose directory is gone (dirRemoved) has nothing left
		// to kill; an error here would fail the caller's Kill, and with it
		// containerd's Delete of the task.
		if err := m.v2.Kill(); err != nil && !m.dirRemoved() {
			return err
		}
		return nil
	}
	// Usually the container's pid namespace died with its init and the
	// cgroup is empty: an empty cgroup cannot gain a process, and freezing
	// and thawing it would only cost the freezer's polling.
	if pids, err := m.Pids(); err == nil && len(pids) == 0 {
		return nil
	}
	frozen := m.v1.Freeze() == nil
	pids, err := m.Pids()
	for _, p := range pids {
		unix.Kill(p, unix.SIGKILL)
	}
	if frozen {
		// Killed processes only die once they run again.
		if terr := m.v1.Thaw(); err == nil {
			err = terr
		}
	}
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil
	}
	return err
}

// dirRemoved reports that the v2 cgroup's directory is gone: with
// the systemd driver, systemd removes a scope's directory as soon as its
// last process is gone (an init that died by itself, say at a refused
// start), possibly before the shim kills or deletes it.
func (m *Manager) dirRemoved() bool { return !exists(filepath.Join(mountpoint, m.path)) }

// RemovedWhenEmpty reports whether something other than the shim removes
// the cgroup as soon as its last process is gone: systemd, for the scope
// of the systemd driver on v2. Its files may then be gone by the time the
// shim learns of an exit.
func (m *Manager) RemovedWhenEmpty() bool { return m.unit != "" }

// deleteTimeout bounds how long Delete waits for killed processes to go.
const deleteTimeout = 5 * time.Second

// Delete kills what is left in the cgroup and removes it. Deleting a cgroup
// that is already gone is not an error.
func (m *Manager) Delete() error {
	if err := m.KillAll(); err != nil {
		log.L.WithError(err).WithField("cgroup", m.path).Debug("killing leftover processes")
	}
	var err error
	for deadline := time.Now().Add(deleteTimeout); ; time.Sleep(20 * time.Millisecond) {
		if m.v2 != nil {
			if err = m.v2.Delete(); err != nil && m.dirRemoved() {
				err = nil
			}
		} else if err = m.v1.Delete(); errors.Is(err, cgroup1.ErrCgroupDeleted) {
			err = nil
		}
		if err == nil {
			// Busy until the killed processes are reaped, as v1 is.
			err = m.deleteHybrid()
		}
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if m.unit != "" {
		if serr := stopScope(context.Background(), m.unit); err == nil {
			err = serr
		}
	}
	if err != nil {
		return fmt.Errorf("deleting cgroup %s: %w", m.path, err)
	}
	return nil
}

type cgroupPath struct {
	path        string // full path in the hierarchy
	slice, unit string // systemd driver only
}

// parsePath reads an OCI cgroupsPath. containerd writes /<namespace>/<id>;
// CRI writes a plain path under the pod's parent, or slice:prefix:name when
// the kubelet uses systemd.
func parsePath(s string, systemd bool) (cgroupPath, error) {
	parts := strings.Split(s, ":")
	if systemd {
		if len(parts) != 3 || !strings.HasSuffix(parts[0], ".slice") || parts[2] == "" {
			return cgroupPath{}, fmt.Errorf("cgroupsPath %q: the systemd driver wants slice:prefix:name, e.g. system.slice:tupper:web: %w", s, errdefs.ErrInvalidArgument)
		}
		if _, err := os.Stat("/run/systemd/system"); err != nil {
			return cgroupPath{}, fmt.Errorf("the systemd cgroup driver is configured but systemd is not running on this host: %w", errdefs.ErrFailedPrecondition)
		}
		unit := parts[2] + ".scope"
		if parts[1] != "" {
			unit = parts[1] + "-" + unit
		}
		return cgroupPath{path: filepath.Join(expandSlice(parts[0]), unit), slice: parts[0], unit: unit}, nil
	}
	if len(parts) == 3 && strings.HasSuffix(parts[0], ".slice") {
		return cgroupPath{}, fmt.Errorf("cgroupsPath %q is in systemd form but the cgroupfs driver is in use; configure the systemd cgroup driver: %w", s, errdefs.ErrInvalidArgument)
	}
	if s == "" || !filepath.IsAbs(s) {
		return cgroupPath{}, fmt.Errorf("cgroupsPath %q must be an absolute path such as /default/web: %w", s, errdefs.ErrInvalidArgument)
	}
	for _, e := range strings.Split(s, "/") {
		if e == ".." {
			return cgroupPath{}, fmt.Errorf("cgroupsPath %q must not contain '..': %w", s, errdefs.ErrInvalidArgument)
		}
	}
	if filepath.Clean(s) == "/" {
		return cgroupPath{}, fmt.Errorf("cgroupsPath %q is the root cgroup, which a container must not own: %w", s, errdefs.ErrInvalidArgument)
	}
	return cgroupPath{path: filepath.Clean(s)}, nil
}

// expandSlice turns a-b-c.slice into /a.slice/a-b.slice/a-b-c.slice, where
// systemd places it.
func expandSlice(slice string) string {
	name := strings.TrimSuffix(slice, ".slice")
	if name == "-" || name == "" {
		return "/"
	}
	var path, prefix string
	for _, part := range strings.Split(name, "-") {
		prefix += part
		path += "/" + prefix + ".slice"
		prefix += "-"
	}
	return path
}

// withoutKernelMemory drops the kernel-memory limit, which the runtime spec
// deprecates and kernels since 6.1 no longer offer, saying so in the log.
func withoutKernelMemory(ctx context.Context, res *specs.LinuxResources) *specs.LinuxResources {
	if res == nil || res.Memory == nil || (res.Memory.Kernel == nil && res.Memory.KernelTCP == nil) { //nolint:staticcheck // deprecated field, read to report it
		return res
	}
	if _, err := os.Stat(filepath.Join(mountpoint, "memory", "memory.kmem.limit_in_bytes")); err == nil && !unified() {
		return res
	}
	log.G(ctx).Warn("ignoring linux.resources.memory.kernel/kernelTCP: this kernel has no kernel-memory limit")
	c := *res
	mem := *res.Memory
	mem.Kernel, mem.KernelTCP = nil, nil //nolint:staticcheck
	c.Memory = &mem
	return &c
}

//go:build !tupper_nocriu

package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/tupper/tupper/shim/criu"
)

// CheckpointOptions say how to checkpoint a running container with CRIU;
// they are containerd's (runc's) checkpoint options.
type CheckpointOptions struct {
	Criu *criu.Client
	// ImageDir receives CRIU's images (made 0700 when missing). WorkDir
	// receives its log and statistics; "" means ImageDir.
	ImageDir, WorkDir string
	// ParentImage is a pre-dump's image directory, relative to ImageDir
	// or absolute, whose memory this dump only adds to.
	ParentImage string
	// LeaveRunning keeps the container running after the dump; otherwise
	// CRIU kills it once its state is saved.
	LeaveRunning bool
	// TCPEstablished saves open TCP connections (CRIU's repair mode).
	TCPEstablished bool
	// ExternalUnixSockets, ShellJob (a terminal) and FileLocks are CRIU's
	// options of the same names.
	ExternalUnixSockets, ShellJob, FileLocks bool
	// EmptyNamespaces are the namespace types whose contents CRIU leaves
	// out ("network": the restore gets a fresh one).
	EmptyNamespaces []specs.LinuxNamespaceType
}

// Files tupper keeps in a checkpoint image beside CRIU's.
const (
	// DescriptorsFile lists what the init's fds 0, 1 and 2 were (CRIU's
	// names, such as "pipe:[1234]"), so that a restore can give it the
	// new container's stdio in their place. runc keeps the same list
	// under the same name.
	DescriptorsFile = "descriptors.json"
	dumpLog         = "dump.log"
	restoreLog      = "restore.log"
)

// Checkpoint saves the running container's process tree into
// opts.ImageDir with CRIU. The container's mounts, namespaces and cgroup
// are described to CRIU as the container made them: bind mounts from the
// host and a joined network or pid namespace are external, so a restore
// supplies them again. Without LeaveRunning the container's processes are
// gone once Checkpoint returns; their exit is reported as any other.
func (c *Container) Checkpoint(opts CheckpointOptions) error {
	if opts.Criu == nil || opts.ImageDir == "" {
		return errors.New("checkpoint: no CRIU or no image directory")
	}
	select {
	case <-c.init.done:
		return errors.New("checkpoint: the container's init has exited")
	default:
	}
	images, work, err := openCriuDirs(opts.ImageDir, opts.WorkDir)
	if err != nil {
		return err
	}
	defer images.Close()
	defer work.Close()
	ro := c.criuOpts(images, work, dumpLog)
	ro.Pid = proto.Int32(int32(c.init.pid))
	ro.LeaveRunning = proto.Bool(opts.LeaveRunning)
	ro.TcpEstablished = proto.Bool(opts.TCPEstablished)
	ro.ExtUnixSk = proto.Bool(opts.ExternalUnixSockets)
	ro.ShellJob = proto.Bool(opts.ShellJob)
	ro.FileLocks = proto.Bool(opts.FileLocks)
	ro.EmptyNs = proto.Uint32(uint32(cloneFlagsOf(opts.EmptyNamespaces)))
	if opts.ParentImage != "" {
		ro.ParentImg, ro.TrackMem = proto.String(opts.ParentImage), proto.Bool(true)
	}
	if fz, err := freezerOf(c.init.pid); err == nil && !sameFreezer(fz) {
		// CRIU freezes through the cgroup (containerd has usually paused
		// it already); without one it would stop each task with ptrace.
		ro.FreezeCgroup = proto.String(fz)
	}
	if err := c.externalNamespaces(ro); err != nil {
		return err
	}
	if err := c.dumpMounts(ro); err != nil {
		return err
	}
	if err := c.writeDescriptors(images, ro); err != nil {
		return err
	}
	t := rpc.CriuReqType_DUMP
	_, err = opts.Criu.Call(&rpc.CriuReq{Type: &t, Opts: ro}, nil, nil)
	if err != nil {
		return criuFailed(err, work.Name(), dumpLog)
	}
	return nil
}

// sameFreezer reports whether fz is our own freezer cgroup: a container
// made without a cgroup of its own, which CRIU must not freeze (with us).
func sameFreezer(fz string) bool {
	ours, err := freezerOf(os.Getpid())
	return err != nil || ours == fz
}

// criuOpts are the options every dump and restore of c shares.
func (c *Container) criuOpts(images, work *os.File, logFile string) *rpc.CriuOpts {
	mode := rpc.CriuCgMode_SOFT
	return &rpc.CriuOpts{
		ImagesDirFd:       proto.Int32(int32(images.Fd())),
		WorkDirFd:         proto.Int32(int32(work.Fd())),
		LogLevel:          proto.Int32(4),
		LogFile:           proto.String(logFile),
		ManageCgroups:     proto.Bool(true),
		ManageCgroupsMode: &mode,
		NotifyScripts:     proto.Bool(true),
		OrphanPtsMaster:   proto.Bool(true),
		// Only what this request says: a host's /etc/criu/default.conf
		// must not change what tupper asked for.
		ConfigFile: proto.String("/dev/null"),
	}
}

// openCriuDirs opens (making them 0700 where missing) the image and work
// directories; CRIU gets them as fds.
func openCriuDirs(imageDir, workDir string) (images, work *os.File, err error) {
	if workDir == "" {
		workDir = imageDir
	}
	for _, d := range []string{imageDir, workDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, nil, err
		}
	}
	if images, err = openDir(imageDir); err != nil {
		return nil, nil, err
	}
	if work, err = openDir(workDir); err != nil {
		images.Close()
		return nil, nil, err
	}
	return images, work, nil
}

func openDir(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// externalNamespaces marks the network and pid namespaces the container
// joined by path (a pod's) as external: CRIU leaves them out and a
// restore puts the processes into the ones its own spec names.
func (c *Container) externalNamespaces(ro *rpc.CriuOpts) error {
	for _, ns := range c.spec.Linux.Namespaces {
		if ns.Path == "" || (ns.Type != specs.NetworkNamespace && ns.Type != specs.PIDNamespace) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", c.init.pid, procNsName[ns.Type]), &st); err != nil {
			return fmt.Errorf("checkpoint: %s namespace: %w", ns.Type, err)
		}
		name := procNsName[ns.Type]
		ro.External = append(ro.External, fmt.Sprintf("%s[%d]:%s", name, st.Ino, externalNsKey(ns.Type)))
	}
	return nil
}

// externalNsKey names a joined namespace in the image.
func externalNsKey(t specs.LinuxNamespaceType) string {
	return "extRoot" + strings.ToUpper(procNsName[t][:1]) + procNsName[t][1:] + "NS"
}

// writeDescriptors records what the init's fds 0-2 are, under the keys
// a restore hands their replacements to CRIU with: a pipe by CRIU's name
// for it ("pipe:[1234]"), and a file the shim opened outside the
// container's mounts (the host's /dev/null, a file:// log) as an external
// file ("file[mnt:inode]"), which the dump is told about; anything else
// (the container's own terminal) CRIU saves and reopens itself.
func (c *Container) writeDescriptors(images *os.File, ro *rpc.CriuOpts) error {
	mounts, err := mountIDs(c.init.pid)
	if err != nil {
		return err
	}
	var fds []string
	for i := 0; i < 3; i++ {
		key := c.stdioKey(i, mounts)
		if strings.HasPrefix(key, "file[") {
			ro.External = append(ro.External, key)
		}
		fds = append(fds, key)
	}
	b, err := json.Marshal(fds)
	if err != nil {
		return err
	}
	fd, err := unix.Openat(int(images.Fd()), DescriptorsFile, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("checkpoint: %s: %w", DescriptorsFile, err)
	}
	f := os.NewFile(uintptr(fd), DescriptorsFile)
	defer f.Close()
	_, err = f.Write(b)
	return err
}

// stdioKey is the key of the init's fd i (see writeDescriptors); "" for
// one CRIU handles alone.
func (c *Container) stdioKey(i int, mounts map[int]bool) string {
	p := fmt.Sprintf("/proc/%d/fd/%d", c.init.pid, i)
	l, err := os.Readlink(p)
	if err != nil {
		return "" // closed
	}
	if strings.HasPrefix(l, "pipe:[") {
		return l
	}
	var st unix.Stat_t
	if unix.Stat(p, &st) != nil {
		return ""
	}
	info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", c.init.pid, i))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(info), "\n") {
		var mnt int
		if _, err := fmt.Sscanf(line, "mnt_id:\t%d", &mnt); err == nil {
			if mounts[mnt] {
				return ""
			}
			return fmt.Sprintf("file[%x:%x]", mnt, st.Ino)
		}
	}
	return ""
}

// mountIDs are the ids of the mounts pid sees.
func mountIDs(pid int) (map[int]bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	ids := map[int]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		var id int
		if _, err := fmt.Sscanf(line, "%d ", &id); err == nil {
			ids[id] = true
		}
	}
	return ids, nil
}

// cloneFlagsOf turns namespace types into clone flags (unknown ones add
// nothing).
func cloneFlagsOf(types []specs.LinuxNamespaceType) uintptr {
	var f uintptr
	for _, t := range types {
		f |= nsFlags[t]
	}
	return f
}

// criuFailed adds the last errors of CRIU's log to err, and where the log
// is: CRIU's own message rarely says which file or mount it tripped on.
func criuFailed(err error, dir, logFile string) error {
	p := filepath.Join(dir, logFile)
	b, rerr := os.ReadFile(p)
	if rerr != nil {
		return err
	}
	var errs []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Error") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) > 3 {
		errs = errs[len(errs)-3:]
	}
	if len(errs) == 0 {
		return fmt.Errorf("%w (log: %s)", err, p)
	}
	return fmt.Errorf("%w: %s (log: %s)", err, strings.Join(errs, "; "), p)
}

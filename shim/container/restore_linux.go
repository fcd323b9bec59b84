//go:build !tupper_nocriu

package container

import (
	"errors"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/tupper/tupper/shim/criu"
)

// RestoreOptions describe a container to restore from a checkpoint image:
// the new container (Options: its spec, bundle, stdio, cgroup, how its
// children are started and waited for) and the image.
type RestoreOptions struct {
	Options
	Criu *criu.Client
	// ImageDir holds the checkpoint; WorkDir gets CRIU's log ("" means
	// ImageDir).
	ImageDir, WorkDir string
	// TCPEstablished, ExternalUnixSockets, ShellJob and FileLocks must be
	// what the checkpoint was taken with.
	TCPEstablished, ExternalUnixSockets, ShellJob, FileLocks bool
	// Veths are the veth pairs CRIU makes again: the container's end by
	// its name in the image, the host's end by its new name, optionally
	// with "@bridge" to put it on that bridge.
	Veths []Veth
	// Restored runs with the restored init's pid while CRIU still holds
	// every restored process stopped (its post-restore step).
	Restored func(pid int) error
}

// Veth is one veth pair for CRIU to make at restore.
type Veth struct{ Inside, Outside string }

// Restore makes a container whose init is the process tree saved in
// opts.ImageDir, running in new namespaces built from the image, joined
// to the ones the spec names by path, in the spec's cgroup. It returns
// once the processes run again; there is nothing to Start. On error no
// restored process is left.
func Restore(opts RestoreOptions) (*Container, error) {
	if opts.Criu == nil || opts.ImageDir == "" {
		return nil, errors.New("restore: no CRIU or no image directory")
	}
	c, err := newContainer(opts.Options)
	if err != nil {
		return nil, err
	}
	images, work, err := openCriuDirs(opts.ImageDir, opts.WorkDir)
	if err != nil {
		return nil, err
	}
	defer images.Close()
	defer work.Close()
	if err := c.makeMountTargets(); err != nil {
		return nil, err
	}
	root, unbind, err := bindRootForCriu(c.rootfs)
	if err != nil {
		return nil, err
	}
	defer unbind()
	r := &restore{c: c, opts: &opts}
	defer r.closeFiles()
	ro := c.criuOpts(images, work, restoreLog)
	ro.Root = proto.String(root)
	ro.RstSibling = proto.Bool(true) // the restored init is our child
	ro.EvasiveDevices = proto.Bool(true)
	ro.TcpEstablished = proto.Bool(opts.TCPEstablished)
	ro.ExtUnixSk = proto.Bool(opts.ExternalUnixSockets)
	ro.ShellJob = proto.Bool(opts.ShellJob)
	ro.FileLocks = proto.Bool(opts.FileLocks)
	for _, v := range opts.Veths {
		ro.Veths = append(ro.Veths, &rpc.CriuVethPair{IfIn: proto.String(v.Inside), IfOut: proto.String(v.Outside)})
	}
	if err := r.joinedNamespaces(ro); err != nil {
		return nil, err
	}
	if err := r.stdio(ro, images); err != nil {
		return nil, err
	}
	t := rpc.CriuReqType_RESTORE
	hooks := &criu.Hooks{Started: func(pid int) error { return r.placeCriu(ro, pid) }, Notify: r.notify}
	if _, err := opts.Criu.Call(&rpc.CriuReq{Type: &t, Opts: ro}, r.extra, hooks); err != nil {
		r.killRestored()
		return nil, criuFailed(fmt.Errorf("restore: %w", err), work.Name(), restoreLog)
	}
	if r.init == nil {
		return nil, errors.New("restore: CRIU reported no restored process")
	}
	r.init.console = r.console
	c.init = r.init
	return c, nil
}

// restore is one Restore's state between CRIU's notifications.
type restore struct {
	c       *Container
	opts    *RestoreOptions
	extra   []*os.File // CRIU's fds 4, 5, ...
	init    *Process
	console *os.File // a terminal's master, passed by CRIU
}

func (r *restore) closeFiles() {
	for _, f := range r.extra {
		f.Close()
	}
}

// inherit hands f to CRIU as key (its fd there is 4 + its index).
func (r *restore) inherit(ro *rpc.CriuOpts, key string, f *os.File) {
	ro.InheritFd = append(ro.InheritFd, &rpc.InheritFd{Key: proto.String(key), Fd: proto.Int32(int32(4 + len(r.extra)))})
	r.extra = append(r.extra, f)
}

// joinedNamespaces gives CRIU the network and pid namespaces the spec
// names by path, for the ones the checkpoint marked external, and has
// it join the other namespaces named by path.
func (r *restore) joinedNamespaces(ro *rpc.CriuOpts) error {
	for _, ns := range r.c.spec.Linux.Namespaces {
		if ns.Path == "" {
			continue
		}
		f, err := openNs(ns.Path, ns.Type)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		switch ns.Type {
		case specs.NetworkNamespace, specs.PIDNamespace:
			r.inherit(ro, externalNsKey(ns.Type), f)
		case specs.CgroupNamespace:
			f.Close()
			return invalid("restore: joining a cgroup namespace by path is not supported by CRIU")
		default:
			ro.JoinNs = append(ro.JoinNs, &rpc.JoinNamespace{Ns: proto.String(procNsName[ns.Type]), NsFile: proto.String(ns.Path)})
			f.Close()
		}
	}
	return nil
}

// placeCriu puts CRIU, before it restores anything, into the container's
// cgroup, and tells it that cgroup is the root of the restored ones.
func (r *restore) placeCriu(ro *rpc.CriuOpts, pid int) error {
	if mv, ok := r.c.cgroup.(CgroupMover); ok {
		if err := mv.Move(pid); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	} else if err := r.c.cgroup.Spawned(pid); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	own, err := cgroupsOf(pid)
	if err != nil {
		return err
	}
	for ctrls, path := range own {
		if ctrls == "" {
			ro.CgRoot = append(ro.CgRoot, &rpc.CgroupRoot{Path: proto.String(path)})
			continue
		}
		ro.CgRoot = append(ro.CgRoot, &rpc.CgroupRoot{Ctrl: proto.String(ctrls), Path: proto.String(path)})
	}
	return r.c.restoreMounts(ro, pid)
}

// CgroupMover is a CgroupPlacer that can move a running process (CRIU,
// which restores a container's processes) into the container's cgroup.
type CgroupMover interface {
	Move(pid int) error
}

// notify answers CRIU's notifications during a restore.
func (r *restore) notify(script string, pid int, files []*os.File) error {
	switch script {
	case "setup-namespaces":
		// The namespaces exist, nothing runs yet: where runc runs the
		// prestart and createRuntime hooks of a restore.
		_, err := r.c.runtimeHooks(r.c.spec, pid)
		return err
	case "post-restore":
		return r.adopt(pid)
	case "orphan-pts-master":
		if len(files) == 0 {
			return errors.New("no terminal master passed")
		}
		fd, err := unix.FcntlInt(files[0].Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return err
		}
		r.console = os.NewFile(uintptr(fd), "pty-master")
	}
	return nil
}

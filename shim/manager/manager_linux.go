// Package manager is the shim's bootstrap side: `start` finds or spawns
// the shim process serving a container's group, `delete` cleans up after
// a shim that is gone, and `-info` reports what tupper supports.
package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/sys"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	optionspb "github.com/tupper/tupper/proto/options"
	"github.com/tupper/tupper/shim/bundle"
	"github.com/tupper/tupper/shim/serve"
	"github.com/tupper/tupper/shim/task"
	"github.com/tupper/tupper/version"
	"golang.org/x/sys/unix"
)

// Group annotations, first match wins: tupper's own, then the CRI pod.
var groupAnnotations = []string{
	"io.containerd.tupper.v2.group",
	"io.kubernetes.cri.sandbox-id",
}

// Values of the ShimGrouping runtime option.
const (
	groupPerContainer = "container" // the default, also ""
	groupPerNamespace = "namespace"
)

// New returns the shim manager for runtime name.
func New(name string) serve.Manager { return &manager{name: name} }

type manager struct{ name string }

func (m *manager) Name() string { return m.name }

// group returns the shim group of container id, whose bundle is cwd: with
// ShimGrouping "namespace" one for the whole containerd namespace (the
// socket address is per namespace already), else the container's group
// annotation, else the container itself.
func group(id string, opts *optionspb.Options) (string, error) {
	switch g := opts.GetShimGrouping(); g {
	case groupPerNamespace:
		return "tupper-namespace-shim", nil
	case "", groupPerContainer:
	default:
		return "", fmt.Errorf("runtime option ShimGrouping %q: want %q or %q: %w",
			g, groupPerContainer, groupPerNamespace, errdefs.ErrInvalidArgument)
	}
	b, err := os.ReadFile("config.json")
	if err != nil {
		return "", fmt.Errorf("read bundle spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", fmt.Errorf("read bundle spec: %w", err)
	}
	for _, a := range groupAnnotations {
		if g := spec.Annotations[a]; g != "" {
			return g, nil
		}
	}
	return id, nil
}

// Start returns the address of the shim serving the container's group,
// starting one if none runs yet. A listening socket for the group means a
// shim is there (socket reuse is how a pod shares one shim).
func (m *manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	id := params.GetInstanceID()
	opts, err := runtimeOptions(params)
	if err != nil {
		return nil, err
	}
	grp, err := group(id, opts)
	if err != nil {
		return nil, err
	}
	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc"}
	addr, err := serve.SocketAddress(ctx, socketDir, params.GetContainerdGrpcAddress(), grp)
	if err != nil {
		return nil, err
	}
	ln, err := listen(ctx, addr, id)
	if err != nil || ln == nil {
		result.Address = addr // nil: a shim serves there already
		return result, err
	}
	defer func() {
		if retErr != nil {
			ln.Close()
			serve.RemoveSocket(addr)
		}
	}()
	f, err := ln.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := startDaemon(ctx, params, opts, id, f); err != nil {
		return nil, err
	}
	result.Address = addr
	return result, nil
}

// listen makes the group's socket, replacing a stale one; it returns nil
// when a shim already serves the group and has agreed to wait for
// container id (task.Join).
func listen(ctx context.Context, addr, id string) (*net.UnixListener, error) {
	// Two starts that both find a dead or stopping shim must not both
	// replace its socket (the second would take the first one's new
	// shim off the address): they take turns, on the socket directory.
	unlock, err := lockDir(filepath.Dir(strings.TrimPrefix(addr, "unix://")))
	if err != nil {
		return nil, err
	}
	defer unlock()
	ln, err := serve.Listen(addr)
	if err == nil {
		return ln, nil
	}
	if !serve.AddrInUse(err) {
		return nil, fmt.Errorf("create shim socket: %w", err)
	}
	if live, err := joinRunning(ctx, addr, id); live || err != nil {
		return nil, err
	}
	// A stale socket from a dead shim, or one a stopping shim has not
	// removed yet (it removes only its own file, by identity).
	if err := serve.RemoveSocket(addr); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	if ln, err = serve.Listen(addr); err != nil {
		return nil, fmt.Errorf("create shim socket: %w", err)
	}
	return ln, nil
}

// lockDir takes an exclusive flock on directory dir (made if missing,
// as serve.Listen would) and returns its release.
func lockDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open socket directory: %w", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock socket directory %s: %w", dir, err)
	}
	return func() { unix.Close(fd) }, nil
}

// joinRunning asks the shim answering at addr to wait for container id;
// live reports that it will. A shim that answers but stops (Unavailable)
// or is not there counts as gone.
func joinRunning(ctx context.Context, addr, id string) (live bool, _ error) {
	err := task.Join(ctx, addr, id)
	switch {
	case err == nil:
		return true, nil
	case errdefs.IsUnavailable(err) || !serve.CanConnect(addr):
		return false, nil
	case errdefs.IsNotImplemented(err) || errdefs.IsNotFound(err):
		// A shim from before joins: share it as before.
		log.G(ctx).WithError(err).Info("group shim cannot join; sharing it anyway")
		return true, nil
	default:
		return false, fmt.Errorf("join the group's shim at %s: %w", addr, err)
	}
}

// startDaemon starts the long-running shim, serving on the listening
// socket sock, in the ShimCgroup if one is set, with its OOM score.
func startDaemon(ctx context.Context, params *bootapi.BootstrapParams, opts *optionspb.Options, id string, sock *os.File) (retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", params.GetContainerdGrpcAddress()}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	if a := params.GetContainerdTtrpcAddress(); a != "" {
		cmd.Env = append(cmd.Env, "TTRPC_ADDRESS="+a)
	}
	cmd.ExtraFiles = []*os.File{sock} // fd 3: the listening socket
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			cmd.Process.Kill()
		}
	}()
	go cmd.Wait()
	if err := joinShimCgroup(opts, cmd.Process.Pid); err != nil {
		return err
	}
	return adjustOOMScore(cmd.Process.Pid)
}

// adjustOOMScore makes the daemon a little likelier to be OOM-killed than
// containerd (our parent), as containerd's shims are.
func adjustOOMScore(pid int) error {
	score, err := sys.GetOOMScoreAdj(os.Getppid())
	if err != nil {
		return fmt.Errorf("read containerd's oom score: %w", err)
	}
	if err := sys.AdjustOOMScore(pid, score+1); err != nil {
		return fmt.Errorf("adjust shim oom score: %w", err)
	}
	return nil
}

// Stop is `shim delete`: containerd runs it when the shim is gone or
// unresponsive. It kills what is left of the container, unmounts its
// rootfs and returns the recorded exit status.
func (m *manager) Stop(ctx context.Context, id string) (serve.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return serve.StopStatus{}, err
	}
	dir := filepath.Join(filepath.Dir(cwd), id)
	if bundle.CleanedUp(dir) {
		// The shim's Delete did the rest (containerd runs this after
		// every Delete too).
		if e, err := bundle.ReadExit(dir); err == nil {
			return serve.StopStatus{Pid: e.Pid, ExitStatus: e.Status, ExitedAt: e.ExitedAt}, nil
		}
	}
	init, initErr := bundle.ReadInit(dir)
	if initErr == nil && init.Alive() {
		if err := unix.Kill(init.Pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
			log.G(ctx).WithError(err).Warn("kill leftover init")
		}
		for i := 0; i < 50 && init.Alive(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	removeCgroup(ctx, dir, id)
	bundle.UnmountRootfs(ctx, filepath.Join(dir, "rootfs"))
	bundle.ReleaseNetwork(ctx, dir)
	removeDeadSocket(ctx, dir)
	if e, err := bundle.ReadExit(dir); err == nil {
		return serve.StopStatus{Pid: e.Pid, ExitStatus: e.Status, ExitedAt: e.ExitedAt}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("read recorded exit status")
	}
	return serve.StopStatus{Pid: init.Pid, ExitStatus: 128 + int(unix.SIGKILL), ExitedAt: time.Now()}, nil
}

// removeDeadSocket removes the socket of the shim that served the
// container whose bundle is dir, if nothing listens on it any more: a
// killed shim cannot remove its own, and the file would stay until a
// start for the same group replaced it. A group shim still serving
// other containers listens, and a start listens on a new socket before
// it lets go of the socket directory's lock, so neither loses its file.
func removeDeadSocket(ctx context.Context, dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "bootstrap.json"))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.G(ctx).WithError(err).Warn("read the shim's address")
		}
		return
	}
	var boot bootapi.BootstrapResult
	if err := json.Unmarshal(b, &boot); err != nil || boot.Address == "" {
		log.G(ctx).WithError(err).Warnf("read the shim's address from %s", b)
		return
	}
	unlock, err := lockDir(filepath.Dir(strings.TrimPrefix(boot.Address, "unix://")))
	if err != nil {
		log.G(ctx).WithError(err).Warn("remove the shim's socket")
		return
	}
	defer unlock()
	if err := serve.RemoveIfNotListening(boot.Address); err != nil {
		log.G(ctx).WithError(err).Warn("remove the shim's socket")
	}
}

// Info reports tupper's runtime features (OCI features.Features).
func (m *manager) Info(ctx context.Context, _ io.Reader) (*types.RuntimeInfo, error) {
	info := &types.RuntimeInfo{
		Name:    m.name,
		Version: &types.RuntimeVersion{Version: version.Version},
	}
	f, err := typeurl.MarshalAnyToProto(Features())
	if err != nil {
		return nil, fmt.Errorf("marshal features: %w", errors.Join(err, errdefs.ErrUnknown))
	}
	info.Features = f
	return info, nil
}

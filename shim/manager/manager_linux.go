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
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"github.com/tupper/tupper/shim/bundle"
	"github.com/tupper/tupper/version"
	"golang.org/x/sys/unix"
)

// Group annotations, first match wins: tupper's own, then the CRI pod.
var groupAnnotations = []string{
	"io.containerd.tupper.v2.group",
	"io.kubernetes.cri.sandbox-id",
}

// New returns the shim manager for runtime name.
func New(name string) shim.Shim { return &manager{name: name} }

type manager struct{ name string }

func (m *manager) Name() string { return m.name }

// group returns the shim group of the container whose bundle is cwd.
func group(id string) (string, error) {
	b, err := os.ReadFile("config.json")
	if err != nil {
		return "", err
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", err
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
	grp, err := group(id)
	if err != nil {
		return nil, fmt.Errorf("read bundle spec: %w", err)
	}
	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc"}
	addr, err := shim.CreateSocketAddress(ctx, socketDir, params.GetContainerdGrpcAddress(), grp, false)
	if err != nil {
		return nil, err
	}
	ln, err := listen(addr)
	if err != nil || ln == nil {
		result.Address = addr // nil: a shim serves there already
		return result, err
	}
	defer func() {
		if retErr != nil {
			ln.Close()
			shim.RemoveSocket(addr)
		}
	}()
	f, err := ln.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := startDaemon(ctx, params, id, f); err != nil {
		return nil, err
	}
	result.Address = addr
	return result, nil
}

// listen makes the group's socket, replacing a stale one; it returns nil
// when a shim already answers there.
func listen(addr string) (*net.UnixListener, error) {
	ln, err := shim.NewSocket(addr)
	if err == nil {
		return ln, nil
	}
	if !shim.SocketEaddrinuse(err) {
		return nil, fmt.Errorf("create shim socket: %w", err)
	}
	if shim.CanConnect(addr) {
		return nil, nil
	}
	// A stale socket from a dead shim.
	if err := shim.RemoveSocket(addr); err != nil {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	if ln, err = shim.NewSocket(addr); err != nil {
		return nil, fmt.Errorf("create shim socket: %w", err)
	}
	return ln, nil
}

// startDaemon starts the long-running shim, serving on the listening
// socket sock, in the ShimCgroup if one is set, with its OOM score.
func startDaemon(ctx context.Context, params *bootapi.BootstrapParams, id string, sock *os.File) (retErr error) {
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
	if err := joinShimCgroup(params, cmd.Process.Pid); err != nil {
		return err
	}
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		return fmt.Errorf("adjust shim oom score: %w", err)
	}
	return nil
}

// Stop is `shim delete`: containerd runs it when the shim is gone or
// unresponsive. It kills what is left of the container, unmounts its
// rootfs and returns the recorded exit status.
func (m *manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return shim.StopStatus{}, err
	}
	dir := filepath.Join(filepath.Dir(cwd), id)
	if bundle.CleanedUp(dir) {
		// The shim's Delete did the rest (containerd runs this after
		// every Delete too).
		if e, err := bundle.ReadExit(dir); err == nil {
			return shim.StopStatus{Pid: e.Pid, ExitStatus: e.Status, ExitedAt: e.ExitedAt}, nil
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
	if err := mount.UnmountRecursive(filepath.Join(dir, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).Warn("unmount rootfs")
	}
	bundle.ReleaseNetwork(ctx, dir)
	if e, err := bundle.ReadExit(dir); err == nil {
		return shim.StopStatus{Pid: e.Pid, ExitStatus: e.Status, ExitedAt: e.ExitedAt}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("read recorded exit status")
	}
	return shim.StopStatus{Pid: init.Pid, ExitStatus: 128 + int(unix.SIGKILL), ExitedAt: time.Now()}, nil
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

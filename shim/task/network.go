package task

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/shim/bundle"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/network"
	"github.com/tupper/tupper/shim/options"
)

// netPlan is the network a container gets, decided before anything is made.
type netPlan struct {
	cfg     network.Config
	managed bool   // tupper attaches a veth; otherwise someone else, or nobody
	owner   string // IPAM owner and veth name seed: unique across namespaces
	publish []network.Port
}

// planNetwork reads the runtime options and the container's annotations.
// Bad options or annotations fail Create here, naming what is wrong.
func planNetwork(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (*netPlan, error) {
	opts, err := options.FromAny(r.Options)
	if err != nil {
		return nil, err
	}
	cfg, err := options.Network(opts)
	if err != nil {
		return nil, err
	}
	if cfg, err = cfg.WithAnnotations(spec.Annotations); err != nil {
		return nil, err
	}
	ns, _ := namespaces.Namespace(ctx)
	plan := &netPlan{cfg: cfg, managed: network.Managed(spec, cfg), owner: ns + "/" + r.ID}
	if v, ok := spec.Annotations[network.AnnotationPublish]; ok {
		if plan.publish, err = network.ParsePublish(v); err != nil {
			return nil, err
		}
		if len(plan.publish) > 0 && !plan.managed {
			return nil, fmt.Errorf("annotation %s needs tupper networking, which this container does not get (mode %s, or a netns path, or another network manager): %w",
				network.AnnotationPublish, cfg.Mode, errdefs.ErrInvalidArgument)
		}
	}
	return plan, nil
}

// publishPorts forwards the requested host ports to the attached container.
func (n *netPlan) publishPorts(ctx context.Context, att *network.Attachment) (*network.Publisher, error) {
	if att == nil || len(n.publish) == 0 {
		return nil, nil
	}
	return network.Publish(ctx, att.Addr.Addr(), n.publish)
}

// attacher is what networks container c during its Create, while its
// helper builds it (container.Options.Alongside); nil when tupper does
// not network it.
func (n *netPlan) attacher(c *Container) func(netns string) error {
	if !n.managed {
		return nil
	}
	return func(netns string) (err error) {
		c.att, err = n.attach(c.Bundle, netns)
		return err
	}
}

// attach networks the created container at network namespace netns (its
// init waits before exec), recording what it made in the bundle for
// Delete and `shim delete`.
func (n *netPlan) attach(bundleDir, netns string) (*network.Attachment, error) {
	if !n.managed {
		return nil, nil
	}
	att, err := bundle.AttachNetwork(bundleDir, n.cfg, n.owner, netns)
	if err != nil {
		return nil, fmt.Errorf("tupper network (bridge %s, subnet %s): %w", n.cfg.Bridge, n.cfg.Subnet, err)
	}
	return att, nil
}

// writeEtcFiles gives a container whose network tupper chose (bridge or
// none) the /etc/hosts, /etc/hostname and /etc/resolv.conf that fit, where
// its image has none and the spec does not mount one.
func writeEtcFiles(rootfs string, spec *specs.Spec, n *netPlan, att *network.Attachment) error {
	if rootfs == "" || (!n.managed && n.cfg.Mode != network.ModeNone) || !newNetns(spec) {
		return nil
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = "localhost"
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if att != nil {
		hosts += fmt.Sprintf("%s\t%s\n", att.Addr.Addr(), hostname)
	}
	files := map[string]string{"/etc/hosts": hosts, "/etc/hostname": hostname + "\n"}
	if att != nil {
		files["/etc/resolv.conf"] = hostResolvConf()
	}
	return asContainerRoot(spec, func() error {
		for dst, content := range files {
			if mountedBySpec(spec, dst) {
				continue
			}
			// Never over what the image has (a link included); nothing on
			// a read-only rootfs, where a runtime must not need to write,
			// nor through an /etc that leads nowhere.
			err := container.CreateFileInRoot(rootfs, dst, []byte(content), 0o644)
			if err != nil && !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.ENOTDIR) {
				return fmt.Errorf("write %s into the container's rootfs: %w", dst, err)
			}
		}
		return nil
	})
}

// asContainerRoot runs fn with the filesystem ids of the container's root
// when the spec maps it (a user namespace): what fn creates then belongs
// to that root, on a chowned rootfs and on an idmapped one alike (which
// refuses to create files for ids outside its mapping: EOVERFLOW). The
// thread is locked and never unlocked, so the ids die with it.
func asContainerRoot(spec *specs.Spec, fn func() error) error {
	uid, gid, ok := mappedRoot(spec)
	if !ok {
		return fn()
	}
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		unix.Setfsgid(gid)
		unix.Setfsuid(uid)
		if got, _ := unix.SetfsuidRetUid(-1); got != uid {
			ch <- fmt.Errorf("setfsuid %d failed", uid)
			return
		}
		ch <- fn()
	}()
	return <-ch
}

// mappedRoot is the host uid and gid of the container's root.
func mappedRoot(spec *specs.Spec) (uid, gid int, ok bool) {
	if spec.Linux == nil {
		return 0, 0, false
	}
	host := func(m []specs.LinuxIDMapping) (int, bool) {
		for _, e := range m {
			if e.ContainerID == 0 {
				return int(e.HostID), true
			}
		}
		return 0, false
	}
	uid, ok1 := host(spec.Linux.UIDMappings)
	gid, ok2 := host(spec.Linux.GIDMappings)
	return uid, gid, ok1 && ok2
}

func newNetns(spec *specs.Spec) bool {
	if spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path == ""
		}
	}
	return false
}

func mountedBySpec(spec *specs.Spec, dst string) bool {
	for _, m := range spec.Mounts {
		if filepath.Clean(m.Destination) == dst {
			return true
		}
	}
	return false
}

// hostResolvConf is the host's resolv.conf without loopback nameservers,
// which a container cannot reach.
func hostResolvConf() string {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return ""
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.IsLoopback() {
				continue
			}
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

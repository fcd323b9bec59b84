// Package network gives a container the network of the talk: a veth pair
// whose host end sits on a tupper bridge and whose container end becomes eth0
// with an address from tupper's IPAM and a default route via the bridge. It
// knows OCI specs but nothing of the shim, so a CLI or a benchmark can use it.
package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Annotations that choose a container's network. Runtime options set the
// same things for every container of a runtime handler.
const (
	AnnotationMode    = "io.containerd.tupper.v2.network"         // "bridge" (default) or "none"
	AnnotationBridge  = "io.containerd.tupper.v2.network.bridge"  // bridge name
	AnnotationSubnet  = "io.containerd.tupper.v2.network.subnet"  // IPv4 subnet, e.g. 10.209.0.0/16
	AnnotationSubnet6 = "io.containerd.tupper.v2.network.subnet6" // optional IPv6 subnet
	AnnotationNAT     = "io.containerd.tupper.v2.network.nat"     // "true": masquerade outbound traffic
	// AnnotationNATInterface limits outbound NAT to one interface.
	AnnotationNATInterface = "io.containerd.tupper.v2.network.nat-interface"
)

// Modes of Config.Mode.
const (
	ModeBridge = "bridge"
	ModeNone   = "none"
)

// Defaults. 10.209.0.0/16 is outside what Docker (172.17/16), CNI's and
// Podman's bridges (10.88/16), flannel (10.244/16), k3s (10.42/16) and
// Kubernetes services (10.96/12) use by default; tupper refuses to create its
// bridge if the host already routes any part of it.
var (
	DefaultBridge   = "tupper0"
	DefaultSubnet   = netip.MustParsePrefix("10.209.0.0/16")
	DefaultStateDir = "/var/lib/tupper/network"
)

// Config says how to network one container.
type Config struct {
	Mode     string
	Bridge   string
	Subnet   netip.Prefix
	Subnet6  netip.Prefix // zero: no IPv6
	StateDir string       // IPAM allocations live under StateDir/<bridge>/
	// NAT masquerades the subnet's outbound traffic (off by default),
	// leaving through NATInterface, or through any interface but the
	// bridge when that is empty.
	NAT          bool
	NATInterface string
}

// DefaultConfig is tupper's bridge network.
func DefaultConfig() Config {
	return Config{Mode: ModeBridge, Bridge: DefaultBridge, Subnet: DefaultSubnet, StateDir: DefaultStateDir}
}

// WithAnnotations applies the container's annotations over c.
func (c Config) WithAnnotations(a map[string]string) (Config, error) {
	if v, ok := a[AnnotationMode]; ok {
		c.Mode = v
	}
	if v, ok := a[AnnotationBridge]; ok {
		c.Bridge = v
	}
	if v, ok := a[AnnotationNAT]; ok {
		switch v {
		case "true":
			c.NAT = true
		case "false":
			c.NAT = false
		default:
			return c, fmt.Errorf("annotation %s=%q must be true or false: %w", AnnotationNAT, v, errdefs.ErrInvalidArgument)
		}
	}
	if v, ok := a[AnnotationNATInterface]; ok {
		c.NATInterface = v
	}
	for key, dst := range map[string]*netip.Prefix{AnnotationSubnet: &c.Subnet, AnnotationSubnet6: &c.Subnet6} {
		if v, ok := a[key]; ok {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return c, fmt.Errorf("annotation %s=%q is not a subnet: %w", key, v, errdefs.ErrInvalidArgument)
			}
			*dst = p.Masked()
		}
	}
	return c, c.Validate()
}

// Validate checks every field and names the first one that is wrong.
func (c Config) Validate() error {
	switch c.Mode {
	case ModeBridge, ModeNone:
	default:
		return fmt.Errorf("network mode %q is unknown (want %q or %q): %w", c.Mode, ModeBridge, ModeNone, errdefs.ErrInvalidArgument)
	}
	if c.Mode == ModeNone {
		return nil
	}
	if !validIfName(c.Bridge) {
		return fmt.Errorf("bridge name %q is not a valid interface name (1-15 characters, no '/', ':' or spaces): %w", c.Bridge, errdefs.ErrInvalidArgument)
	}
	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 30 {
		return fmt.Errorf("subnet %s must be an IPv4 prefix of /30 or larger: %w", c.Subnet, errdefs.ErrInvalidArgument)
	}
	if c.Subnet6.IsValid() && (!c.Subnet6.Addr().Is6() || c.Subnet6.Addr().Is4In6() || c.Subnet6.Bits() > 126) {
		return fmt.Errorf("subnet6 %s must be an IPv6 prefix of /126 or larger: %w", c.Subnet6, errdefs.ErrInvalidArgument)
	}
	if c.NATInterface != "" && !validIfName(c.NATInterface) {
		return fmt.Errorf("NAT interface %q is not a valid interface name: %w", c.NATInterface, errdefs.ErrInvalidArgument)
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("network state directory %q must be an absolute path: %w", c.StateDir, errdefs.ErrInvalidArgument)
	}
	return nil
}

// validIfName applies the kernel's rules for interface names (dev_valid_name).
func validIfName(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		if r == '/' || r == ':' || r < 0x21 || r == 0x7f || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// Managed reports whether tupper should network this container: only when it
// gets a new network namespace nobody else configures. A namespace path
// (CRI/CNI, --with-ns), createRuntime hooks that set up networking themselves
// (nerdctl), or mode "none" leave the network alone.
func Managed(spec *specs.Spec, c Config) bool {
	if c.Mode == ModeNone || spec.Linux == nil {
		return false
	}
	newNet := false
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			if ns.Path != "" {
				return false
			}
			newNet = true
		}
	}
	if !newNet {
		return false // host network
	}
	if spec.Hooks != nil {
		for _, h := range append(append([]specs.Hook{}, spec.Hooks.CreateRuntime...), spec.Hooks.Prestart...) { //nolint:staticcheck // prestart is still what older callers use
			if strings.Contains(filepath.Base(h.Path), "nerdctl") || containsArg(h.Args, "internal", "oci-hook") {
				return false
			}
		}
	}
	return true
}

func containsArg(args []string, want ...string) bool {
	n := 0
	for _, a := range args {
		if n < len(want) && a == want[n] {
			n++
		}
	}
	return n == len(want)
}

// HostVethName is the host end's name for a container: short enough for
// IFNAMSIZ and stable, so a cleanup after a shim crash can find it.
func HostVethName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "tp" + hex.EncodeToString(sum[:])[:11]
}

func peerTempName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "tc" + hex.EncodeToString(sum[:])[:11]
}

func (c Config) ipamDir(family int) string {
	return filepath.Join(c.StateDir, c.Bridge, "ipv"+strconv.Itoa(family))
}

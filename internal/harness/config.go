package harness

import (
	"fmt"
	"strings"
)

// Config is what a private containerd's config.toml says: its own root,
// state and sockets, optionally the tupper snapshotter as a proxy plugin,
// the snapshotters the transfer service unpacks into, and CRI on or off.
// It is the one place that writes such a config: the Go tests use it
// through Start, the scripts in hack/ through hack/containerd-config.
type Config struct {
	Root    string // containerd's root directory
	State   string // containerd's state directory
	Address string // gRPC socket; ttrpc listens on Address+".ttrpc"

	// TupperSocket and TupperRoot wire in the tupper snapshotter as the
	// proxy plugin "tupper"; empty TupperSocket leaves it out.
	TupperSocket string
	TupperRoot   string

	// Unpack lists the snapshotters that imports and pulls unpack into:
	// the first is required, the rest optional (containerd starts without
	// them). Empty means containerd's default (overlayfs).
	Unpack []string

	// CRI keeps containerd's CRI plugins (and NRI); without it they are
	// disabled, for they are slow to start and share global sockets and
	// state with other containerds on the machine.
	CRI bool

	// LogLevel is containerd's log level; empty means containerd's default.
	LogLevel string
}

// criPlugins are disabled when Config.CRI is off.
var criPlugins = []string{
	"io.containerd.grpc.v1.cri",
	"io.containerd.cri.v1.runtime",
	"io.containerd.cri.v1.images",
	"io.containerd.podsandbox.controller.v1.podsandbox",
	"io.containerd.sandbox.controller.v1.shim",
	"io.containerd.nri.v1.nri",
}

// TOML renders the config. Callers may append tables of their own, and
// more unpack_config entries anywhere after it.
func (c Config) TOML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "version = 3\nroot = %q\nstate = %q\n", c.Root, c.State)
	if !c.CRI {
		b.WriteString("disabled_plugins = [\n")
		for _, p := range criPlugins {
			fmt.Fprintf(&b, "  %q,\n", p)
		}
		b.WriteString("]\n")
	}
	fmt.Fprintf(&b, "\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n", c.Address, c.Address+".ttrpc")
	b.WriteString("[debug]\n  address = \"\"\n")
	if c.LogLevel != "" {
		fmt.Fprintf(&b, "  level = %q\n", c.LogLevel)
	}
	b.WriteString("[metrics]\n  address = \"\"\n")
	if c.TupperSocket != "" {
		fmt.Fprintf(&b, `
[proxy_plugins.tupper]
  type = "snapshot"
  address = %q
  capabilities = ["remap-ids"]
  [proxy_plugins.tupper.exports]
    root = %q
`, c.TupperSocket, c.TupperRoot)
	}
	if len(c.Unpack) > 0 {
		b.WriteString("\n# Unpacking goes only into the snapshotters listed (containerd >= 2.1);\n" +
			"# listing any replaces the default.\n")
	}
	for i, sn := range c.Unpack {
		fmt.Fprintf(&b, `[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = "linux/amd64"
  snapshotter = %q
  differ = "walking"
`, sn)
		if i > 0 {
			b.WriteString("  optional = true\n")
		}
	}
	return b.String()
}

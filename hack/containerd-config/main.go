// Command containerd-config prints the config of a private containerd with
// the tupper snapshotter, for hack/demo.sh, hack/cri.sh and hack/bench.sh:
// the same config the Go integration harness writes (internal/harness).
// Callers append tables of their own.
//
//	go run ./hack/containerd-config -root R -state S -address A \
//	    -tupper-socket SOCK -tupper-root DIR [-cri]
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/tupper/tupper/internal/harness"
)

func main() {
	var c harness.Config
	flag.StringVar(&c.Root, "root", "", "containerd's root directory (required)")
	flag.StringVar(&c.State, "state", "", "containerd's state directory (required)")
	flag.StringVar(&c.Address, "address", "", "containerd's gRPC socket (required)")
	flag.StringVar(&c.TupperSocket, "tupper-socket", "", "the tupper snapshotter's socket; empty leaves the proxy plugin out")
	flag.StringVar(&c.TupperRoot, "tupper-root", "", "the tupper snapshotter's root directory")
	unpack := flag.String("unpack", "tupper,overlayfs", "snapshotters to unpack into, comma-separated: the first required, the rest optional")
	flag.BoolVar(&c.CRI, "cri", false, "keep containerd's CRI and NRI plugins")
	flag.Parse()
	if c.Root == "" || c.State == "" || c.Address == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "containerd-config: -root, -state and -address are required, and nothing else")
		flag.Usage()
		os.Exit(2)
	}
	if *unpack != "" {
		c.Unpack = strings.Split(*unpack, ",")
	}
	fmt.Print(c.TOML())
}

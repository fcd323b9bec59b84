// tupper-helper is the container init helper of containerd-shim-tupper-v2
// and tupper-run when it is installed next to them: the process that
// becomes a container's init, or an exec'd process, after building its
// environment (see shim/container). It links only shim/container, built
// without CRIU (the tag tupper_nocriu, see the Makefile), so it starts
// faster than the shim's own binary, which can serve as the helper too. It
// is not meant to be run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/tupper/tupper/shim/container"
	// Joins of user and time namespaces, before the Go runtime starts.
	_ "github.com/tupper/tupper/shim/nsenter"
)

func main() {
	container.MaybeInit()
	fmt.Fprintln(os.Stderr, "tupper-helper: the container helper of containerd-shim-tupper-v2; it is started only by the shim or tupper-run")
	os.Exit(2)
}

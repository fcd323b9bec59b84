// Package clients runs the same nerdctl commands against containerd's runc
// shim and against tupper's, on one private containerd (internal/harness,
// with the tupper snapshotter), and compares what a user would see.
//
// The harness runs containerd in a network namespace of the test's own
// (Options.Netns), and with it the shims, the OCI hooks nerdctl installs
// and the CNI plugins they run; nerdctl runs there too (Env.Command). So
// the CNI bridge, its iptables rules and the ip_forward the bridge plugin
// turns on exist only there, and go with the namespace. nerdctl gets its
// own --data-root, --cni-netconfpath (a default "bridge" network of the
// test's own, with a bridge name and a subnet no other test uses, and
// host-local's state in the test's directory) and --address.
package clients

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/harness"
	"github.com/tupper/tupper/internal/testutil"
)

const (
	runcRuntime   = "io.containerd.runc.v2"
	tupperRuntime = harness.TupperRuntimeType
)

// image is the busybox image, in both runners' namespaces.
var image = harness.ImageName("busybox")

// env is the harness's Env with nerdctl's network: the runners' containerd
// namespaces are its Namespace with a suffix (see runners), which its
// cleanup covers.
type env struct {
	*harness.Env
	bridge string // nerdctl's CNI bridge
	subnet string // 10.216.N.0/24
}

// requireTools checks for what nerdctl needs beyond what the harness does.
func requireTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, bin := range []string{"nerdctl", "runc", "containerd-shim-runc-v2", "iptables", "criu"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" on PATH (make deps)")
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		missing = append(missing, "/usr/lib/cni (containernetworking-plugins, make deps)")
	}
	if len(missing) > 0 {
		testutil.Require(t, "needs "+strings.Join(missing, ", "))
	}
}

// newEnv starts the snapshotter and containerd (in a network namespace of
// the test's own), writes nerdctl's network and imports the busybox image
// into both runners' namespaces.
func newEnv(t *testing.T) *env {
	t.Helper()
	requireTools(t)
	suffix := randHex(3)
	e := &env{Env: harness.Start(t, harness.Options{Snapshotter: harness.Tupper, Netns: true}),
		bridge: "tnc" + suffix, subnet: fmt.Sprintf("10.216.%d.0/24", 1+int(suffix[0])%250)}
	// Registered after the harness's cleanup, so it runs first, while
	// containerd still runs.
	t.Cleanup(func() { e.cleanup(t) })
	e.writeCNIConfig(t)
	var namespaces []string
	for _, r := range e.runners() {
		namespaces = append(namespaces, r.ns)
	}
	e.ImportImage(t, "busybox", namespaces...)
	return e
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// writeCNIConfig writes nerdctl's default network ("bridge", which nerdctl
// would otherwise make as nerdctl0 on 10.4.0.0/24 with its IPAM state in
// /var/lib/cni) with this test's bridge, subnet and IPAM directory, and
// no masquerading: nothing leaves the namespace anyway.
func (e *env) writeCNIConfig(t *testing.T) {
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "bridge",
  "nerdctlID": "%s",
  "nerdctlLabels": {"nerdctl/default-network": "true"},
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall", "ingressPolicy": "same-bridge"},
    {"type": "tuning"}
  ]
}
`, randHex(32), e.bridge, filepath.Join(e.Dir, "cni-ipam"), e.subnet)
	dir := filepath.Join(e.Dir, "cni")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nerdctl-bridge.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// inNetns runs a host command inside the test's network namespace.
func (e *env) inNetns(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := e.Command(ctx, args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

// cleanup removes every container nerdctl knows through nerdctl, so that
// its hooks release the containers' addresses and its own state goes,
// and then what CNI keeps on the host; the harness's cleanup, after it,
// removes whatever is left and undoes the rest.
func (e *env) cleanup(t *testing.T) {
	for _, r := range e.runners() {
		if ids := e.containerIDs(r.ns); len(ids) > 0 {
			r.nerdctl(append([]string{"rm", "-f", "-v"}, ids...)...)
		}
	}
	e.removeCNIState(t)
}

// removeCNIState removes what CNI keeps on the host outside the test's
// directory: libcni's result cache (/var/lib/cni/results/<network>-<ns>-
// <id>-<ifname>, left by a container whose CNI DEL never ran) for this
// test's namespaces, and host-local's state of the networks that nerdctl
// compose made (compose networks get the default dataDir; their names
// carry the test's random project name).
func (e *env) removeCNIState(t *testing.T) {
	for _, r := range e.runners() {
		files, _ := filepath.Glob("/var/lib/cni/results/*-" + r.ns + "-*")
		for _, f := range files {
			t.Logf("cleanup: removing CNI cache %s", f)
			os.Remove(f)
		}
	}
	dirs, _ := filepath.Glob("/var/lib/cni/networks/" + e.project() + "_*")
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// project is the compose project name, unique to the test run.
func (e *env) project() string { return "tnc" + strings.TrimPrefix(e.bridge, "tnc") + "demo" }

// containerIDs lists every container of a containerd namespace.
func (e *env) containerIDs(ns string) []string {
	out, err := e.CtrIn(ns, "containers", "ls", "-q")
	if err != nil {
		return nil
	}
	return strings.Fields(out)
}

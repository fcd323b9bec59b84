package shim

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tupper/tupper/internal/testutil"
)

// TestInstallerImage builds the Kubernetes installer's image (make
// installer-image), imports it, and runs it on tupper's runtime against a
// throwaway node: a host root with a btrfs at /var/lib/containerd-tupper,
// a systemctl that records its calls and an API server on loopback that
// records the node label.
func TestInstallerImage(t *testing.T) {
	e := newEnv(t)
	archive := filepath.Join(e.Dir, "installer.tar")
	cmd := exec.Command("../../hack/installer-image.sh", archive)
	cmd.Env = append(os.Environ(), "INSTALLER_IMAGE_NAME=tupper.local/installer:test")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make installer-image: %v\n%s", err, out)
	}
	e.mustCtr("images", "import", archive)
	host, sa := filepath.Join(e.Dir, "node"), filepath.Join(e.Dir, "sa")
	os.MkdirAll(filepath.Join(host, "var/lib/containerd-tupper"), 0o700)
	testutil.MountBtrfs(t, 256<<20, filepath.Join(host, "var/lib/containerd-tupper"))
	os.MkdirAll(filepath.Join(host, "etc/containerd"), 0o755)
	os.WriteFile(filepath.Join(host, "etc/containerd/config.toml"), []byte("version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n"), 0o644)
	labels := make(chan string, 1)
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		labels <- r.URL.Path + " " + string(b)
	}))
	defer api.Close()
	os.MkdirAll(sa, 0o755)
	os.WriteFile(filepath.Join(sa, "token"), []byte("t0ken"), 0o644)
	os.WriteFile(filepath.Join(sa, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o644)
	out, err := e.ctr("run", "--rm", "--net-host", "--runtime", "io.containerd.tupper.v2",
		"--mount", "type=bind,src="+host+",dst=/host,options=rbind:rw",
		"--mount", "type=bind,src="+sa+",dst=/var/run/secrets/kubernetes.io/serviceaccount,options=rbind:ro",
		"--env", "NODE_NAME=node-1", "tupper.local/installer:test", "installer",
		"/tupper/bin/tupper-install", "-api", api.URL, "-systemctl", `sh -c echo${IFS}"$*">>/host/systemctl.log systemctl`)
	if err != nil {
		t.Fatalf("the installer failed: %v\n%s", err, out)
	}
	for _, f := range []string{"usr/local/bin/containerd-shim-tupper-v2", "usr/local/bin/containerd-tupper-snapshotter",
		"etc/systemd/system/containerd-tupper-snapshotter.service", "etc/containerd/conf.d/tupper.toml"} {
		if _, err := os.Stat(filepath.Join(host, f)); err != nil {
			t.Errorf("not installed: %s", f)
		}
	}
	calls, _ := os.ReadFile(filepath.Join(host, "systemctl.log"))
	if !strings.Contains(string(calls), "restart containerd.service") {
		t.Errorf("systemctl calls: %q", calls)
	}
	if got := <-labels; got != `/api/v1/nodes/node-1 {"metadata":{"labels":{"tupper.dev/runtime":"ready"}}}` {
		t.Errorf("label: %q", got)
	}
}

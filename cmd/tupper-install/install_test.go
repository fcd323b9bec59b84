package main

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tupper/tupper/internal/testutil"
)

// node is a throwaway node for the installer: a host root (with a btrfs at
// /var/lib/containerd-tupper when btrfs is true), the installer image's
// files, a systemctl that records its calls and an API server that
// records the label patch.
type node struct {
	c       config
	calls   string // systemctl's log
	patches chan string
}

func newNode(t *testing.T, btrfs bool, containerdConfig string) *node {
	t.Helper()
	testutil.NeedRoot(t)
	dir := t.TempDir()
	n := &node{patches: make(chan string, 1), calls: filepath.Join(dir, "systemctl.log")}
	n.c = config{host: filepath.Join(dir, "host"), from: filepath.Join(dir, "image"), node: "node-1",
		serviceAccount: filepath.Join(dir, "sa"), systemctl: []string{"sh", "-c", `echo "$*" >> ` + n.calls, "systemctl"}}
	if btrfs {
		mnt := filepath.Join(n.c.host, snapshotterRoot)
		if err := os.MkdirAll(mnt, 0o700); err != nil {
			t.Fatal(err)
		}
		testutil.MountBtrfs(t, 256<<20, mnt)
	}
	write(t, filepath.Join(n.c.host, "etc/containerd/config.toml"), containerdConfig)
	for _, f := range []string{"bin/containerd-tupper-snapshotter", "bin/containerd-shim-tupper-v2", "bin/tupper-helper", unitName, "containerd-tupper.toml"} {
		write(t, filepath.Join(n.c.from, f), "content of "+f)
	}
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		n.patches <- r.Method + " " + r.URL.Path + " " + r.Header.Get("Authorization") + " " + string(b)
	}))
	t.Cleanup(api.Close)
	n.c.api = api.URL
	write(t, filepath.Join(n.c.serviceAccount, "token"), "secret-token\n")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	write(t, filepath.Join(n.c.serviceAccount, "ca.crt"), string(ca))
	return n
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

const importsConf = "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n"

func TestInstall(t *testing.T) {
	n := newNode(t, true, importsConf)
	if err := n.c.install(); err != nil {
		t.Fatal(err)
	}
	for to, want := range map[string]string{
		"/usr/local/bin/containerd-shim-tupper-v2":     "content of bin/containerd-shim-tupper-v2",
		"/usr/local/bin/tupper-helper":                 "content of bin/tupper-helper",
		"/etc/systemd/system/" + unitName:              "content of " + unitName,
		"/etc/containerd/conf.d/tupper.toml":           "content of containerd-tupper.toml",
		"/usr/local/bin/containerd-tupper-snapshotter": "content of bin/containerd-tupper-snapshotter",
	} {
		b, err := os.ReadFile(filepath.Join(n.c.host, to))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q %v", to, b, err)
		}
	}
	if st, err := os.Stat(filepath.Join(n.c.host, "/usr/local/bin/containerd-shim-tupper-v2")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("shim binary mode: %v %v", st, err)
	}
	calls, _ := os.ReadFile(n.calls)
	if want := "daemon-reload\nenable --now " + unitName + "\nrestart containerd.service\n"; string(calls) != want {
		t.Errorf("systemctl calls %q, want %q", calls, want)
	}
	if got := <-n.patches; got != `PATCH /api/v1/nodes/node-1 Bearer secret-token {"metadata":{"labels":{"tupper.dev/runtime":"ready"}}}` {
		t.Errorf("label patch %q", got)
	}
}

// TestInstallRefusals: a node that cannot run tupper is told why, and
// nothing is installed on it.
func TestInstallRefusals(t *testing.T) {
	for _, c := range []struct {
		name, conf, want string
		btrfs            bool
	}{
		{"not btrfs", importsConf, "is not on btrfs", false},
		{"no imports", "version = 3\n", "does not import", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, c.btrfs, c.conf)
			err := n.c.install()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("install: %v, want %q", err, c.want)
			}
			for _, p := range []string{"/usr/local/bin", "/etc/systemd/system", "/etc/containerd/conf.d"} {
				if _, err := os.Stat(filepath.Join(n.c.host, p)); err == nil {
					t.Errorf("%s made on a node that was refused", p)
				}
			}
			if _, err := os.Stat(n.calls); err == nil {
				t.Error("systemctl ran on a node that was refused")
			}
		})
	}
}

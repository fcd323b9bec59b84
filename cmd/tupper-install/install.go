package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type config struct {
	host, from, node, api, serviceAccount string
	systemctl                             []string
}

const (
	snapshotterRoot = "/var/lib/containerd-tupper"
	unitName        = "containerd-tupper-snapshotter.service"
	fragment        = "/etc/containerd/conf.d/tupper.toml"
	readyLabel      = "tupper.dev/runtime"
)

// installed are the files the installer image carries (from) and where
// they go on the node (to), in the order they are put there.
var installed = []struct {
	from, to string
	mode     os.FileMode
}{
	{"bin/containerd-tupper-snapshotter", "/usr/local/bin/containerd-tupper-snapshotter", 0o755},
	// The helper before the shim that looks for it next to itself.
	{"bin/tupper-helper", "/usr/local/bin/tupper-helper", 0o755},
	{"bin/containerd-shim-tupper-v2", "/usr/local/bin/containerd-shim-tupper-v2", 0o755},
	{unitName, "/etc/systemd/system/" + unitName, 0o644},
	{"containerd-tupper.toml", fragment, 0o644},
}

// install checks, then installs, then restarts and labels.
func (c *config) install() error {
	if err := c.check(); err != nil {
		return err
	}
	for _, f := range installed {
		if err := c.put(f.from, f.to, f.mode); err != nil {
			return err
		}
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", "--now", unitName}, {"restart", "containerd.service"}} {
		if err := c.run(args...); err != nil {
			return err
		}
	}
	return c.label()
}

// check refuses a node tupper cannot run on, before anything changes.
func (c *config) check() error {
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil || !bytes.Contains(fs, []byte("\tbtrfs\n")) {
		return errors.New("this node's kernel has no btrfs (/proc/filesystems); load the module or pick another node")
	}
	root := filepath.Join(c.host, snapshotterRoot)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return fmt.Errorf("%s: %w", snapshotterRoot, err)
	}
	if st.Type != unix.BTRFS_SUPER_MAGIC {
		return fmt.Errorf("%s is not on btrfs; mount a btrfs filesystem there first", snapshotterRoot)
	}
	cfg, err := os.ReadFile(filepath.Join(c.host, "/etc/containerd/config.toml"))
	if err != nil {
		return fmt.Errorf("containerd's config: %w", err)
	}
	if !importsFragment.Match(cfg) {
		return fmt.Errorf(`/etc/containerd/config.toml does not import %s: add imports = ["/etc/containerd/conf.d/*.toml"]`, fragment)
	}
	for _, f := range installed {
		if _, err := os.Stat(filepath.Join(c.from, f.from)); err != nil {
			return fmt.Errorf("the installer image lacks %s: %w", f.from, err)
		}
	}
	return nil
}

// importsFragment matches an imports line naming conf.d/*.toml or the
// fragment itself.
var importsFragment = regexp.MustCompile(`(?m)^\s*imports\s*=.*"/etc/containerd/conf\.d/(\*|tupper)\.toml"`)

// put copies from (in the image) to to (on the node), through a file
// beside it renamed into place, so a running shim's binary is replaced,
// never rewritten.
func (c *config) put(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(filepath.Join(c.from, from))
	if err != nil {
		return err
	}
	dst := filepath.Join(c.host, to)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tupper-install"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	fmt.Printf("tupper-install: installed %s\n", to)
	return nil
}

func (c *config) run(args ...string) error {
	argv := append(append([]string(nil), c.systemctl...), args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// label sets tupper.dev/runtime=ready on the node, with the service
// account's token, trusting only its CA.
func (c *config) label() error {
	token, err := os.ReadFile(filepath.Join(c.serviceAccount, "token"))
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(c.serviceAccount, "ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return errors.New("no certificate in the service account's ca.crt")
	}
	if c.node == "" || strings.ContainsAny(c.node, "/?#") {
		return fmt.Errorf("node name %q: set NODE_NAME (the downward API's spec.nodeName)", c.node)
	}
	body := fmt.Sprintf(`{"metadata":{"labels":{%q:"ready"}}}`, readyLabel)
	req, err := http.NewRequest(http.MethodPatch, c.api+"/api/v1/nodes/"+c.node, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/strategic-merge-patch+json")
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("label the node: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("label the node: the API server answered %s", resp.Status)
	}
	return nil
}

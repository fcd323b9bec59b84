// tupper-install installs tupper on the node it runs on, from the
// installer image (deploy/kubernetes/installer.yaml runs it in a
// privileged init container with the node's root at /host):
//
//	tupper-install [-host /host] [-from /tupper] [-node NAME] [-api URL]
//	               [-serviceaccount DIR] [-systemctl "nsenter ... systemctl"]
//
// It checks first and changes nothing unless every check passes: btrfs in
// the kernel, /var/lib/containerd-tupper on btrfs, containerd's config
// importing /etc/containerd/conf.d. Then it installs the binaries, the
// snapshotter's systemd unit and the containerd fragment (each written
// aside and renamed into place), enables the snapshotter, restarts
// containerd, and labels the node tupper.dev/runtime=ready through the
// API server with the pod's service account.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	var c config
	flag.StringVar(&c.host, "host", "/host", "the node's root filesystem")
	flag.StringVar(&c.from, "from", "/tupper", "the files to install (bin/, the unit, the fragment)")
	flag.StringVar(&c.node, "node", os.Getenv("NODE_NAME"), "this node's name, to label it")
	flag.StringVar(&c.api, "api", "https://kubernetes.default.svc", "the API server")
	flag.StringVar(&c.serviceAccount, "serviceaccount", "/var/run/secrets/kubernetes.io/serviceaccount", "token and ca.crt for the API server")
	systemctl := flag.String("systemctl", "nsenter -t 1 -m -u -i -n -- systemctl", "how to run systemctl on the node")
	flag.Parse()
	c.systemctl = strings.Fields(*systemctl)
	if err := c.install(); err != nil {
		fmt.Fprintln(os.Stderr, "tupper-install:", err)
		os.Exit(1)
	}
	fmt.Println("tupper-install: node ready")
}

package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tupper/tupper/internal/harness"
	"github.com/tupper/tupper/internal/testutil"
)

// criStack is a private hack/cri.sh stack (containerd's CRI with the
// tupper runtime handler on tupper's snapshotter), with directories,
// registry port, bridge and subnet of its own.
type criStack struct {
	t        *testing.T
	env      []string
	dir      string // TUPPER_CRI_DIR
	registry string
	bridge   string
	systemd  bool // the systemd cgroup driver (cri_driver_test.go)
}

func newCRIStack(t *testing.T) *criStack {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root")
	}
	for _, bin := range []string{"crictl", "containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			testutil.Require(t, "needs "+bin+" (make deps; hack/install-cri.sh)")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	registry := l.Addr().String()
	l.Close()
	n := time.Now().UnixNano()
	s := &criStack{t: t, dir: fmt.Sprintf("/run/tupper-cri-it%d", n%1e6), registry: registry, bridge: fmt.Sprintf("tpci%d", n%1e6), systemd: harness.SystemdCgroupDriver(t)}
	s.env = append(os.Environ(),
		"TUPPER_CRI_DIR="+s.dir, "TUPPER_CRI_REGISTRY="+registry, "TUPPER_CRI_BRIDGE="+s.bridge,
		fmt.Sprintf("TUPPER_CRI_SUBNET=10.213.%d.0/24", 200+n%40),
		"CONTAINER_RUNTIME_ENDPOINT=unix://"+s.dir+"/containerd.sock",
		// No gateway: the CNI bridge plugin would turn on the host's
		// ip_forward for one, and a test must leave the host as it was.
		"TUPPER_CRI_GATEWAY=0")
	if s.systemd {
		s.env = append(s.env, "TUPPER_CRI_SYSTEMD_CGROUP=1")
	}
	t.Cleanup(func() {
		if out, err := s.script("down"); err != nil {
			t.Errorf("hack/cri.sh down: %v\n%s", err, out)
		}
	})
	if out, err := s.script("up"); err != nil {
		t.Fatalf("hack/cri.sh up: %v\n%s", err, out)
	}
	return s
}

func (s *criStack) script(args ...string) (string, error) {
	cmd := exec.Command("../hack/cri.sh", args...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *criStack) crictl(args ...string) (string, error) {
	cmd := exec.Command("crictl", args...)
	cmd.Env = s.env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), err
}

func (s *criStack) mustCrictl(args ...string) string {
	s.t.Helper()
	out, err := s.crictl(args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func writeJSON(t *testing.T, path string, v any) string {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCRIPod drives containerd's CRI with crictl and runtime handler
// tupper: a pod of two containers that reach each other over localhost,
// exec with and without a terminal, logs, stats, and a stop and removal
// that leave no shim, mount, cgroup, veth or address behind.
func TestCRIPod(t *testing.T) {
	s := newCRIStack(t)
	image := "registry.k8s.io/e2e-test-images/busybox:1.29-2"
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	harness.BuildImage(t, "busybox", s.registry+"/e2e-test-images/busybox:1.29-2", archive)
	if out, err := s.script("push", archive); err != nil {
		t.Fatalf("push: %v %s", err, out)
	}
	s.mustCrictl("pull", image)

	work := t.TempDir()
	n := time.Now().UnixNano()
	uid := fmt.Sprintf("tupper-it-%d", n)
	// A cgroup parent, as the kubelet always gives one (pod stats need it).
	podCfg := writeJSON(t, filepath.Join(work, "pod.json"), map[string]any{
		"metadata":      map[string]any{"name": "pair", "namespace": "tupper-it", "uid": uid},
		"log_directory": filepath.Join(work, "logs"), "linux": map[string]any{"cgroup_parent": podCgroupParent(t, s.systemd, n)},
	})
	container := func(name string, command ...string) string {
		return writeJSON(t, filepath.Join(work, name+".json"), map[string]any{
			"metadata": map[string]any{"name": name}, "image": map[string]any{"image": image},
			"command": command, "log_path": name + ".log", "linux": map[string]any{},
		})
	}
	pod := s.mustCrictl("runp", "--runtime", "tupper", podCfg)
	web := s.mustCrictl("create", pod, container("web", "sh", "-c",
		"mkdir -p /www; echo hello-over-localhost > /www/index.html; echo web-started; exec httpd -f -p 8080 -h /www"), podCfg)
	client := s.mustCrictl("create", pod, container("client", "sh", "-c", "echo client-started; while :; do i=$((i+1)); done"), podCfg)
	s.mustCrictl("start", web)
	s.mustCrictl("start", client)

	// One shim for the pod: sandbox and both containers.
	if info := s.mustCrictl("inspectp", pod); !strings.Contains(info, `"runtimeHandler": "tupper"`) {
		t.Fatalf("pod not on the tupper handler:\n%s", info)
	}
	var page string
	waitUntil(t, 20*time.Second, func() bool {
		out, err := s.crictl("exec", client, "wget", "-qO-", "http://127.0.0.1:8080/")
		page = out
		return err == nil
	}, "the client to reach the web container over localhost")
	if page != "hello-over-localhost\n" {
		t.Fatalf("over localhost: %q", page)
	}
	if out := s.mustCrictl("exec", "-s", client, "sh", "-c", "echo $((6*7))"); out != "42" {
		t.Fatalf("exec -s: %q", out)
	}
	// exec -t needs a terminal on crictl's side: script(1) gives it one.
	tty := exec.Command("script", "-qec", "crictl exec -it "+client+" tty", "/dev/null")
	tty.Env = s.env
	if out, err := tty.CombinedOutput(); err != nil || !strings.Contains(string(out), "/dev/pts/") {
		t.Fatalf("exec -t: %v %q", err, out)
	}
	waitUntil(t, 10*time.Second, func() bool {
		out, _ := s.crictl("logs", web)
		return strings.Contains(out, "web-started")
	}, "the web container's log")

	// Stats with real numbers (the client spins).
	s.waitStats(t, client)
	if out := s.mustCrictl("statsp", "-o", "json", pod); !strings.Contains(out, "usageCoreNanoSeconds") {
		t.Fatalf("statsp: %s", out)
	}

	s.mustCrictl("stopp", pod)
	s.mustCrictl("rmp", pod)

	// Nothing of the pod is left: shim, container mounts, cgroups, veth, address.
	waitUntil(t, 20*time.Second, func() bool { return len(s.leftovers(pod, web, client)) == 0 }, "the pod to leave nothing behind")
}

// waitStats waits until crictl stats shows non-zero cpu and memory for
// the container.
func (s *criStack) waitStats(t *testing.T, container string) {
	t.Helper()
	var st struct {
		Stats []struct {
			CPU struct {
				UsageCoreNanoSeconds struct{ Value string } `json:"usageCoreNanoSeconds"`
			} `json:"cpu"`
			Memory struct {
				WorkingSetBytes struct{ Value string } `json:"workingSetBytes"`
			} `json:"memory"`
		} `json:"stats"`
	}
	waitUntil(t, 20*time.Second, func() bool {
		out, err := s.crictl("stats", "-o", "json", container)
		if err != nil || json.Unmarshal([]byte(out), &st) != nil || len(st.Stats) != 1 {
			return false
		}
		return st.Stats[0].CPU.UsageCoreNanoSeconds.Value != "" && st.Stats[0].CPU.UsageCoreNanoSeconds.Value != "0" &&
			st.Stats[0].Memory.WorkingSetBytes.Value != "" && st.Stats[0].Memory.WorkingSetBytes.Value != "0"
	}, "non-zero cpu and memory stats")
}

func (s *criStack) leftovers(pod string, containers ...string) []string {
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), "containerd-shim-tupper-v2") && strings.Contains(string(b), s.dir) {
			left = append(left, "shim "+p)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, pod) {
			left = append(left, "mount "+l)
		}
	}
	left = append(left, cgroupLeftovers(append(containers, pod)...)...)
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", s.bridge).Output(); len(strings.TrimSpace(string(out))) > 0 {
		left = append(left, "veth "+string(out))
	}
	ipam, _ := filepath.Glob(filepath.Join(s.dir, "cni-ipam", "*", "10.*"))
	left = append(left, ipam...)
	return left
}

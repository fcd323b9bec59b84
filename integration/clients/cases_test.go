package clients

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// cases, the most used first. Each names its containers; every runtime
// has a namespace of its own, so the names are the same on both.
var cases = []diffCase{
	{"run/exit codes", func(r *runner) {
		r.Do("run", "--rm", image, "true")
		r.Do("run", "--rm", image, "false")
		r.Do("run", "--rm", image, "sh", "-c", "exit 3")
		r.Do("run", "--rm", image, "sh", "-c", "kill -9 $$")
	}},
	{"run/stdout and stderr", func(r *runner) {
		r.Do("run", "--rm", image, "sh", "-c", "echo out; echo err >&2; echo out2")
	}},
	{"run/missing executable", func(r *runner) {
		res := r.nerdctl("run", "--name", "missing", image, "/nonexistent")
		r.Note("exit %d, says no such file: %v", res.Code, strings.Contains(res.Err, "no such file"))
		r.Do("ps", "-a", "--format", "{{.Names}} {{.Status}}")
		r.Do("rm", "-f", "missing")
		r.Note("addresses left in the CNI IPAM: %d", r.e.ipamLeases())
	}},
	{"run/identity", func(r *runner) {
		r.Do("run", "--rm", "--name", "idn", "-h", "myhost", "-u", "1000:1000", "-w", "/tmp", "-e", "FOO=bar", image,
			"sh", "-c", "hostname; id; pwd; echo $FOO")
		r.Do("run", "--rm", "--name", "idn2", image, "sh", "-c", "hostname | wc -c; id; pwd")
	}},
	{"env/HOME", func(r *runner) {
		r.Do("run", "--rm", image, "env")
		r.Do("run", "--rm", "-u", "1000", image, "sh", "-c", "echo HOME=$HOME")
		r.Do("run", "--rm", "-u", "65534", image, "sh", "-c", "echo HOME=$HOME")
	}},
	{"run/detached and logs", func(r *runner) {
		r.Must("run", "-d", "--name", "d1", image, "sh", "-c", "echo out; echo err >&2; exit 4")
		r.Do("wait", "d1")
		r.Do("logs", "d1")
		r.Do("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}}", "d1")
		r.Do("rm", "d1")
	}},
	{"run/interactive without a terminal", func(r *runner) {
		r.DoIn("echo piped; exit 6\n", "run", "--rm", "-i", image, "sh")
		// (not cat to EOF: with runc, nerdctl's stdin close sometimes
		// comes before the shim opened stdin and cat waits forever)
		r.DoIn("some input\nmore\n", "run", "--rm", "-i", image, "head", "-n1")
	}},
	{"run/terminal", func(r *runner) {
		r.DoPty("", "run", "--rm", "-t", image, "sh", "-c", "tty; echo hi; exit 2")
		r.DoPty("echo typed; exit 5\r", "run", "--rm", "-it", image, "sh")
		r.Do("ps", "-a", "--format", "{{.Names}} {{.Status}}")
	}},
	{"exec/variants", func(r *runner) {
		r.Must("run", "-d", "--name", "x1", image, "sleep", "1000")
		r.Do("exec", "x1", "echo", "hi")
		r.Do("exec", "x1", "sh", "-c", "exit 7")
		r.Do("exec", "-e", "A=1", "-w", "/tmp", "-u", "1000", "x1", "sh", "-c", "echo $A; pwd; id")
		r.DoIn("via stdin\n", "exec", "-i", "x1", "cat")
		r.DoPty("", "exec", "-t", "x1", "sh", "-c", "tty; echo out")
		r.DoPty("echo typed; exit 3\r", "exec", "-it", "x1", "sh")
		r.Do("exec", "-d", "x1", "sleep", "1")
		res := r.nerdctl("exec", "x1", "/nonexistent")
		r.Note("exec of a missing file: exit %d", res.Code)
		r.Do("exec", "x1", "sh", "-c", "echo out; echo err >&2")
	}},
	{"net none/lo", func(r *runner) {
		r.Do("run", "--rm", "--net", "none", image, "sh", "-c", "ip -o link | cut -d' ' -f2,3; ping -c1 -W1 127.0.0.1 >/dev/null && echo lo works")
	}},
	{"net none/interfaces", func(r *runner) {
		r.Do("run", "--rm", "--net", "none", image, "sh", "-c", "ip -o link | cut -d' ' -f2; wc -l < /proc/net/route")
	}},
	{"bridge/interfaces and routes", func(r *runner) {
		r.Do("run", "--rm", image, "sh", "-c", "ip -o -4 addr show eth0 | cut -d' ' -f2,6,7; ip route; cat /etc/hosts | wc -l; grep -c nameserver /etc/resolv.conf")
	}},
	{"bridge/publish", func(r *runner) {
		r.Must("run", "-d", "--name", "web", "-p", "127.0.0.1:18080:80", image, "sh", "-c",
			"mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 80 -h /www")
		var body string
		r.waitUntil("the published port", func() bool {
			out, err := r.e.inNetns("/bin/busybox", "timeout", "5", "/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1:18080/")
			body = out
			return err == nil
		})
		r.Note("over loopback: %s", strings.TrimSpace(body))
		r.Do("port", "web")
		r.Do("rm", "-f", "web")
	}},
	{"bridge/own service", func(r *runner) {
		r.Must("run", "-d", "--name", "web2", "-p", "127.0.0.1:18081:80", image, "sh", "-c",
			"mkdir -p /www && echo self > /www/index.html && exec httpd -f -p 80 -h /www")
		// (busybox wget's -T segfaults; timeout bounds it instead)
		r.Do("exec", "web2", "timeout", "5", "wget", "-q", "-O-", "http://127.0.0.1:80/")
	}},
	{"read-only and tmpfs", func(r *runner) {
		r.Do("run", "--rm", "--read-only", "--tmpfs", "/scratch", image, "sh", "-c",
			"touch /x 2>&1; echo rc=$?; touch /scratch/y && echo scratch ok; grep ' /scratch ' /proc/mounts | cut -d' ' -f1-3")
	}},
	{"volumes/bind", func(r *runner) {
		dir := filepath.Join(r.e.Dir, "bind-"+r.name)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "from-host"), []byte("host data\n"), 0o644)
		r.Do("run", "--rm", "-v", dir+":/data", image, "sh", "-c", "cat /data/from-host; echo container data > /data/from-container")
		b, _ := os.ReadFile(filepath.Join(dir, "from-container"))
		r.Note("host sees: %q", b)
		r.Do("run", "--rm", "-v", dir+":/data:ro", image, "sh", "-c", "touch /data/x 2>&1; echo rc=$?")
	}},
	{"volumes/named", func(r *runner) {
		r.Do("volume", "create", "vol1")
		r.Do("run", "--rm", "-v", "vol1:/data", image, "sh", "-c", "echo kept > /data/f")
		r.Do("run", "--rm", "-v", "vol1:/data", image, "cat", "/data/f")
		r.Do("volume", "ls", "-q")
		r.Do("volume", "rm", "vol1")
	}},
	{"resources/create and update", func(r *runner) {
		r.Must("run", "-d", "--name", "res", "--memory", "64m", "--memory-reservation", "32m", "--cpus", "0.5",
			"--cpu-shares", "512", "--pids-limit", "50", "--cpuset-cpus", "0", image, "sleep", "1000")
		show := "cd /sys/fs/cgroup; cat memory/memory.limit_in_bytes memory/memory.soft_limit_in_bytes cpu/cpu.shares cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us pids/pids.max cpuset/cpuset.cpus"
		r.Do("exec", "res", "sh", "-c", show)
		r.Do("update", "--memory", "128m", "--cpus", "1", "--pids-limit", "100", "--cpu-shares", "256", "res")
		r.Do("exec", "res", "sh", "-c", show)
		r.Do("inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.CPUShares}} {{.HostConfig.PidsLimit}}", "res")
	}},
	{"resources/cgroup membership", func(r *runner) {
		r.Do("run", "--rm", "--name", "cgm", image, "sh", "-c", "sed -e 's|/<ns>/.*|/<ns>/<id>|' /proc/self/cgroup")
	}},
	{"security/capabilities", func(r *runner) {
		r.Do("run", "--rm", image, "grep", "Cap", "/proc/self/status")
		r.Do("run", "--rm", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", image, "grep", "Cap", "/proc/self/status")
		r.Do("run", "--rm", "--privileged", image, "sh", "-c", "grep Cap /proc/self/status; grep -c . /proc/self/mountinfo >/dev/null && echo mounts ok")
	}},
	{"security/seccomp", func(r *runner) {
		r.Do("run", "--rm", image, "grep", "Seccomp", "/proc/self/status")
		r.Do("run", "--rm", "--security-opt", "seccomp=unconfined", image, "grep", "Seccomp:", "/proc/self/status")
		r.Do("run", "--rm", image, "sh", "-c", "unshare -m true 2>&1; echo rc=$?")
	}},
	{"ulimit and shm", func(r *runner) {
		r.Do("run", "--rm", "--ulimit", "nofile=1024:2048", image, "sh", "-c", "ulimit -n; ulimit -Hn")
		r.Do("run", "--rm", "--shm-size", "32m", image, "sh", "-c", "df -k /dev/shm | tail -1")
		r.Do("run", "--rm", "--sysctl", "net.ipv4.ip_forward=1", image, "cat", "/proc/sys/net/ipv4/ip_forward")
	}},
	{"sysctl/kernel.hostname", func(r *runner) {
		res := r.nerdctl("run", "--rm", "--sysctl", "kernel.hostname=foo", image, "hostname")
		r.Note("exit %d, output %q", res.Code, strings.TrimSpace(res.Out))
	}},
	{"pause and unpause", func(r *runner) {
		r.Must("run", "-d", "--name", "p1", image, "sleep", "1000")
		r.Do("pause", "p1")
		r.Do("inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "p1")
		r.Do("exec", "p1", "true")
		r.Do("unpause", "p1")
		r.Do("inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "p1")
		r.Do("exec", "p1", "echo", "thawed")
	}},
	{"stop and kill", func(r *runner) {
		r.Must("run", "-d", "--name", "s1", image, "sleep", "1000")
		r.Do("stop", "-t", "1", "s1")
		r.Do("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "s1")
		r.Must("run", "-d", "--name", "s2", image, "sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.1; done")
		r.Do("stop", "s2")
		r.Do("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "s2")
		r.Must("run", "-d", "--name", "s3", image, "sleep", "1000")
		r.Do("kill", "s3")
		r.Do("wait", "s3")
		r.Must("run", "-d", "--name", "s4", image, "sh", "-c", "trap 'exit 12' USR1; while :; do sleep 0.1; done")
		r.Do("kill", "-s", "USR1", "s4")
		r.Do("wait", "s4")
		r.Do("start", "s4")
		r.Do("kill", "s4")
		r.Do("wait", "s4")
	}},
	{"top, stats, inspect", func(r *runner) {
		r.Must("run", "-d", "--name", "t1", "--label", "k=v", image, "sleep", "1000")
		res := r.nerdctl("top", "t1")
		r.Note("top: %s", topShape(res.Out))
		r.Do("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "t1")
		r.Do("inspect", "-f", "{{.State.Status}} {{.State.Running}} {{.State.Paused}} [{{.State.FinishedAt}}] {{.State.ExitCode}} {{.Path}} {{.Args}} {{.Config.Labels.k}}", "t1")
		r.Do("ps", "--format", "{{.Names}} {{.Status}} {{.Command}}")
	}},
	{"cp and commit", func(r *runner) {
		src := filepath.Join(r.e.Dir, "cp-in-"+r.name)
		os.WriteFile(src, []byte("copied in\n"), 0o644)
		r.Must("run", "-d", "--name", "c1", image, "sleep", "1000")
		r.Do("cp", src, "c1:/tmp/in")
		r.Do("exec", "c1", "cat", "/tmp/in")
		dst := filepath.Join(r.e.Dir, "cp-out-"+r.name)
		r.Do("cp", "c1:/etc/passwd", dst)
		b, _ := os.ReadFile(dst)
		r.Note("copied out %d bytes", len(b))
		r.Do("exec", "c1", "sh", "-c", "echo committed > /tmp/g")
		r.Do("commit", "c1", "tupper.local/committed:latest")
		r.Do("run", "--rm", "tupper.local/committed:latest", "cat", "/tmp/g", "/tmp/in")
		r.Do("rmi", "-f", "tupper.local/committed:latest")
	}},
	{"rm and prune", func(r *runner) {
		r.Must("run", "-d", "--name", "rm1", image, "sleep", "1000")
		res := r.nerdctl("rm", "rm1")
		r.Note("rm of a running container: exit %d", res.Code)
		r.Do("rm", "-f", "rm1")
		r.Do("run", "--name", "ex1", image, "true")
		r.Do("container", "prune", "-f")
		r.Do("ps", "-a", "-q")
		r.Do("volume", "create", "pv")
		r.Do("volume", "prune", "-a", "-f")
	}},
	{"compose up and down", func(r *runner) {
		dir := filepath.Join(r.e.Dir, "compose-"+r.name)
		os.MkdirAll(dir, 0o755)
		yaml := "services:\n" +
			"  web:\n    image: " + image + "\n    runtime: " + r.runtime + "\n" +
			"    command: [\"sh\", \"-c\", \"mkdir -p /www && echo web > /www/index.html && exec httpd -f -p 80 -h /www\"]\n" +
			"  client:\n    image: " + image + "\n    runtime: " + r.runtime + "\n" +
			"    command: [\"sleep\", \"1000\"]\n    depends_on: [web]\n"
		file := filepath.Join(dir, "compose.yaml")
		os.WriteFile(file, []byte(yaml), 0o644)
		r.Do("compose", "-f", file, "-p", r.e.project(), "up", "-d")
		r.Do("ps", "--format", "{{.Names}} {{.Status}}")
		r.waitUntil("web answers client", func() bool {
			return r.nerdctl("compose", "-f", file, "-p", r.e.project(), "exec", "-T", "client", "timeout", "5", "wget", "-q", "-O-", "http://web/").Code == 0
		})
		r.Do("compose", "-f", file, "-p", r.e.project(), "exec", "-T", "client", "wget", "-q", "-O-", "http://web/")
		r.Do("compose", "-f", file, "-p", r.e.project(), "down")
		r.Do("ps", "-a", "-q")
	}},
}

// topShape is top's output without pids and times: the header and the
// commands.
func topShape(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 {
		return ""
	}
	shape := []string{strings.Join(strings.Fields(lines[0]), " ")}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) > 0 {
			shape = append(shape, f[0]+" "+f[len(f)-2]+" "+f[len(f)-1])
		}
	}
	return strings.Join(shape, " | ")
}

// ipamLeases counts the addresses host-local has handed out and not
// taken back.
func (e *env) ipamLeases() int {
	n := 0
	entries, _ := os.ReadDir(filepath.Join(e.Dir, "cni-ipam", "bridge"))
	for _, d := range entries {
		if ipFile.MatchString(d.Name()) {
			n++
		}
	}
	return n
}

var ipFile = regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`)

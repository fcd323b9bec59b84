package shim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tupper/tupper/internal/testutil"
	"github.com/tupper/tupper/shim/criu"
)

// Checkpoint and restore, each scenario on tupper and on runc with the
// same ctr commands (runc's shim drives the same CRIU).

var crRuntimes = []string{"io.containerd.tupper.v2", "io.containerd.runc.v2"}

func needCriu(t *testing.T) {
	t.Helper()
	if _, err := criu.Find("", nil); err != nil {
		testutil.Require(t, err.Error())
	}
}

// execSeq numbers the exec ids of these tests.
var execSeq int

// counterScript counts in a shell variable and writes each value over
// /tmp/n; /written is a file of the rootfs made before any checkpoint.
// Each value replaces the file by a rename, so a reader never finds it
// half-written.
const counterScript = `echo hello-rootfs > /written; i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.05; done`

// count reads the counter of a running container through an exec.
func (e *env) count(id string) int {
	e.t.Helper()
	execSeq++
	out := e.mustCtr("task", "exec", "--exec-id", fmt.Sprintf("n%d", execSeq), id, "cat", "/tmp/n")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		e.t.Fatalf("count of %s: %q", id, out)
	}
	return n
}

// countPast waits until the counter of id is above n, and returns it.
func (e *env) countPast(id string, n int) int {
	e.t.Helper()
	var got int
	waitFor(e.t, func() bool { got = e.count(id); return got > n }, fmt.Sprintf("the counter of %s past %d", id, n))
	return got
}

// TestCheckpointCtr: `ctr c checkpoint --task --rw` of a running counter
// (it goes on running), then `ctr task checkpoint --exit` (it stops).
// The second is restored in place, as a new task of the same container
// (containerd's client with WithTaskCheckpoint: `ctr c restore` cannot
// read what `ctr task checkpoint` writes), the first with `ctr c restore
// --live --rw` into a new container: each goes on counting from where it
// was, with the file its rootfs had, and tupper's gets its address back.
func TestCheckpointCtr(t *testing.T) {
	needCriu(t)
	e := newEnv(t)
	for _, rt := range crRuntimes {
		t.Run(rt, func(t *testing.T) {
			e := e.For(t)
			id := "cr-" + strings.Split(rt, ".")[2]
			e.mustCtr("run", "-d", "--null-io", "--runtime", rt, image, id, "sh", "-c", counterScript)
			addr := e.addr(rt, id)
			n0 := e.countPast(id, 3)

			e.mustCtr("containers", "checkpoint", "--task", "--rw", id, "ckpt-live-"+id)
			if st := e.taskStatus(id); st != "RUNNING" {
				t.Fatalf("after a leave-running checkpoint the task is %s", st)
			}
			n1 := e.countPast(id, n0)

			ckptExit := strings.TrimSpace(e.mustCtr("task", "checkpoint", "--exit", id))
			e.waitStopped(id)
			e.mustCtr("task", "delete", id)
			e.newTaskFromCheckpoint(id, ckptExit)
			e.checkRestored(rt, id, n1, addr)
			e.remove(id)

			e.mustCtr("containers", "restore", "--live", "--rw", id, "ckpt-live-"+id)
			e.checkRestored(rt, id, n0, addr)
			e.remove(id)
		})
	}
}

// client is a containerd client of this env, closed with the test, and a
// context in the env's namespace.
func (e *env) client() (*client.Client, context.Context) {
	e.t.Helper()
	cl, err := client.New(e.Address)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cl.Close() })
	return cl, namespaces.WithNamespace(context.Background(), e.Namespace)
}

// loadContainer is container id through containerd's client, for what
// ctr has no flags for; the client is closed when the test ends.
func (e *env) loadContainer(id string) (*client.Client, context.Context, client.Container) {
	e.t.Helper()
	cl, ctx := e.client()
	c, err := cl.LoadContainer(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return cl, ctx, c
}

// newTaskFromCheckpoint starts a new task of container id from the
// checkpoint image ref, through containerd's client.
func (e *env) newTaskFromCheckpoint(id, ref string) {
	t := e.t
	t.Helper()
	cl, ctx, c := e.loadContainer(id)
	img, err := cl.GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.NewTask(ctx, cio.NullIO, client.WithTaskCheckpoint(img))
	if err != nil {
		t.Fatalf("new task from %s: %v", ref, err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start the task restored from %s: %v", ref, err)
	}
}

// checkRestored checks that the restored id counts on from at least
// from, has /written, and (tupper) has addr again.
func (e *env) checkRestored(rt, id string, from int, addr string) {
	t := e.t
	t.Helper()
	a := e.count(id)
	if a < from {
		t.Fatalf("restored, the counter reads %d, below %d where it was", a, from)
	}
	// A process that started over would have written small numbers by now.
	if b := e.countPast(id, a); b < from {
		t.Fatalf("restored counter went from %d to %d", a, b)
	}
	execSeq++
	if w := e.mustCtr("task", "exec", "--exec-id", fmt.Sprintf("w%d", execSeq), id, "cat", "/written"); w != "hello-rootfs\n" {
		t.Fatalf("/written after restore: %q", w)
	}
	if got := e.addr(rt, id); got != addr {
		t.Fatalf("restored eth0 address %q, want %q", got, addr)
	}
}

// addr is tupper's eth0 address of id ("" under runc, which ctr gives no
// network).
func (e *env) addr(rt, id string) string {
	if !strings.Contains(rt, "tupper") {
		return ""
	}
	execSeq++
	out := e.mustCtr("task", "exec", "--exec-id", fmt.Sprintf("a%d", execSeq), id, "ip", "-4", "-o", "addr", "show", "eth0")
	f := strings.Fields(out)
	for i, w := range f {
		if w == "inet" && i+1 < len(f) {
			return f[i+1]
		}
	}
	e.t.Fatalf("no address on eth0: %q", out)
	return ""
}

// TestCheckpointWithoutCriu: with no criu on the runtime's PATH, the same
// checkpoint fails on both runtimes, tupper's error saying what is
// missing, and tupper's -info says checkpoint is off.
func TestCheckpointWithoutCriu(t *testing.T) {
	e := newEnv(t)
	shadow := filepath.Join(e.Dir, "nocriu")
	os.MkdirAll(shadow, 0o755)
	for _, b := range []string{"runc", "containerd-shim-runc-v2"} {
		if p, err := exec.LookPath(b); err == nil {
			os.Symlink(p, filepath.Join(shadow, b))
		}
	}
	e.Path = e.BinDir + ":" + shadow + ":/usr/sbin:/usr/bin:/sbin:/bin"
	if p, err := exec.LookPath("criu"); err == nil && strings.HasPrefix(p, "/usr/") && !strings.HasPrefix(p, "/usr/local/") {
		testutil.Require(t, "a criu in "+filepath.Dir(p)+" cannot be hidden from the runtime")
	}
	e.StopContainerd(t)
	e.StartContainerd(t)

	info := exec.Command(e.Shim, "-info")
	info.Env = []string{"PATH=" + e.Path}
	out, _ := info.CombinedOutput()
	if !strings.Contains(string(out), `"io.containerd.tupper.v2.checkpoint.enabled":"false"`) {
		t.Errorf("-info without criu does not say checkpoint is off:\n%s", out)
	}
	for _, rt := range crRuntimes {
		id := "nocriu-" + strings.Split(rt, ".")[2]
		e.mustCtr("run", "-d", "--null-io", "--runtime", rt, image, id, "sleep", "1000")
		out, err := e.ctr("task", "checkpoint", id)
		if err == nil {
			t.Fatalf("%s: checkpoint without criu succeeded: %s", rt, out)
		}
		t.Logf("%s: %s", rt, strings.TrimSpace(out))
		if !strings.Contains(strings.ToLower(out), "criu") {
			t.Errorf("%s: the error does not name CRIU: %s", rt, out)
		}
		if strings.Contains(rt, "tupper") && !strings.Contains(out, "CRIU >= 4.0") {
			t.Errorf("tupper's error does not say which CRIU it needs: %s", out)
		}
		if st := e.taskStatus(id); st != "RUNNING" {
			t.Errorf("%s: after the failed checkpoint the task is %s", rt, st)
		}
		e.remove(id)
	}
}

// tcpScript runs an echo server on 127.0.0.1:7777 that greets each
// connection with its pid, and one client connection to it that reads
// /tmp/in (a FIFO) and writes to /tmp/out; nothing reconnects.
const tcpScript = `mkfifo /tmp/in
nc -ll -p 7777 -e sh -c 'echo conn-$$; exec cat' &
exec 3<>/tmp/in
until nc 127.0.0.1 7777 <&3 >/tmp/out; do :; done &
wait`

// TestCheckpointTCPEstablished: an open TCP connection between two
// processes of the container (over loopback) survives a checkpoint with
// open TCP connections (containerd's OpenTcp, runc's --tcp-established)
// that stopped the container, and its restore. Both runtimes run the
// same steps in a network namespace the test made and the container
// joins by path (as CRI's pods do): CRIU leaves it out of the image and
// restores the sockets into it. tupper also restores a container with a
// network namespace of its own, which CRIU saves and restores whole (lo,
// eth0, addresses); runc cannot: it always leaves the network namespace
// out of its dumps ("runc doesn't manage network devices") and restores
// into an empty one whose lo is down. runc's restore takes CRIU's
// tcp-established from a CRIU config file named by the container's
// org.criu.config annotation (containerd passes a restore no options);
// tupper's from its own record in the image.
func TestCheckpointTCPEstablished(t *testing.T) {
	needCriu(t)
	e := newEnv(t)
	conf := filepath.Join(e.Dir, "criu-tcp.conf")
	os.WriteFile(conf, []byte("tcp-established\n"), 0o644)
	for _, tc := range []struct {
		rt     string
		joined bool
	}{{crRuntimes[0], true}, {crRuntimes[1], true}, {crRuntimes[0], false}} {
		id := "tcp-" + strings.Split(tc.rt, ".")[2]
		if !tc.joined {
			id += "-ownnet"
		}
		t.Run(id, func(t *testing.T) {
			e := e.For(t)
			args := []string{"run", "-d", "--null-io", "--annotation", "org.criu.config=" + conf, "--runtime", tc.rt}
			if tc.joined {
				args = append(args, "--with-ns", "network:"+e.netns(id))
			}
			e.mustCtr(append(args, image, id, "sh", "-c", tcpScript)...)
			e.send(id, "ping1")
			e.checkpointExit(id, "ckpt-tcp-"+id, true)
			e.mustCtr("task", "delete", id)
			e.mustCtr("containers", "rm", id)
			e.mustCtr("containers", "restore", "--live", "--rw", id, "ckpt-tcp-"+id)
			out := e.send(id, "ping2")
			if n := strings.Count(out, "conn-"); n != 1 {
				t.Fatalf("%d connections after the restore, want the one from before:\n%s", n, out)
			}
			e.remove(id)
		})
	}
}

// netns makes a network namespace with lo up, removed when the test
// ends, and returns its path.
func (e *env) netns(name string) string {
	t := e.t
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	return "/var/run/netns/" + name
}

// send writes line into the container's connection and waits for its
// echo in /tmp/out, which it returns.
func (e *env) send(id, line string) string {
	e.t.Helper()
	execSeq++
	e.mustCtr("task", "exec", "--exec-id", fmt.Sprintf("s%d", execSeq), id, "sh", "-c", "echo "+line+" > /tmp/in")
	var out string
	waitFor(e.t, func() bool {
		execSeq++
		out, _ = e.ctr("task", "exec", "--exec-id", fmt.Sprintf("o%d", execSeq), id, "cat", "/tmp/out")
		return strings.Contains(out, line+"\n")
	}, line+" echoed back")
	return out
}

// checkpointExit checkpoints id (rw layer and task) into the image ref
// and stops it, as `ctr c checkpoint --rw --task` does plus containerd's
// exit and, with tcp, OpenTcp options, which ctr has no flags for.
func (e *env) checkpointExit(id, ref string, tcp bool) {
	t := e.t
	t.Helper()
	_, ctx, c := e.loadContainer(id)
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	openTCP := func(_ context.Context, _ *client.Client, _ *containers.Container, _ *imagespec.Index, o *runcoptions.CheckpointOptions) error {
		o.OpenTcp = tcp
		return nil
	}
	_, err = c.Checkpoint(ctx, ref, client.WithCheckpointRuntime, client.WithCheckpointRW, openTCP,
		client.WithCheckpointTaskExit, client.WithCheckpointTask)
	task.Resume(ctx) // gone after the dump: an error then is expected
	if err != nil {
		t.Fatalf("checkpoint %s: %v", id, err)
	}
	e.waitStopped(id)
}

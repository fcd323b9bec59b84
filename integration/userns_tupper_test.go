package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

var usernsFlags = []string{"--remap-labels", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"}

// tupperUserns selects tupper's runtime for a user-namespaced `ctr run`.
// Not with --runtime-config-path: for a task with a uid map, ctr's client
// sets the stdio owner in runc's options message (WithUIDOwner), which
// fails on any other options type, so the shim gets runc's message and
// its default network. The container gets no network instead (a netns
// with loopback only), so no bridge is made.
func (e *Env) tupperUserns() []string {
	return append(e.TupperRuntime()[:2], "--annotation", "io.containerd.tupper.v2.network=none")
}

// taskPid is the host pid of a running task's init.
func (e *Env) taskPid(id string) int {
	e.t.Helper()
	for _, l := range strings.Split(e.MustCtr("task", "ls"), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err == nil {
				return pid
			}
		}
	}
	e.t.Fatalf("task %s not listed:\n%s", id, e.MustCtr("task", "ls"))
	return 0
}

// TestUserNamespaceTupperRuntime runs a user-namespaced container with
// tupper's runtime on tupper's idmapped snapshot: root inside, 100000 on
// the host (through the rootfs mount too), no chowned copy of the image,
// and an exec joins the container's user namespace.
func TestUserNamespaceTupperRuntime(t *testing.T) {
	e := NewEnv(t)
	e.requireTupper() // remap-ids is tupper's capability
	sn := "--snapshotter=" + e.Snapshotter
	tupper := e.tupperUserns()
	image := e.importImage("busybox")
	before := len(snapshotLines(e.MustCtr("snapshots", sn, "ls")))

	id := uniqueID("userns-tupper")
	args := append(append(append([]string{"run", "-d", sn}, tupper...), usernsFlags...), image, id, "sleep", "1000")
	e.MustCtr(args...) // the harness's cleanup deletes it
	pid := e.taskPid(id)

	out := e.MustCtr("task", "exec", "--exec-id", "probe", id, "sh", "-c",
		"cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; stat -c %u:%g /bin/busybox; touch /tmp/written && stat -c %u:%g /tmp/written; "+
			"[ $(readlink /proc/self/ns/user) = $(readlink /proc/1/ns/user) ] && echo same-userns")
	want := "0 100000 65536 0 100000 65536 0 0 0:0 0:0 same-userns"
	if got := strings.Join(strings.Fields(out), " "); got != want {
		t.Fatalf("inside the user namespace: got %q, want %q", got, want)
	}
	// The host's view: the task runs as 100000, and the rootfs mount (the
	// idmapped snapshot) shows the image's files and the new file as
	// belonging to 100000.
	status, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if !strings.Contains(string(status), "Uid:\t100000\t100000\t100000\t100000") {
		t.Errorf("host uid of the task:\n%s", status)
	}
	host, _ := os.Readlink("/proc/self/ns/user")
	if ns, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/user"); ns == host {
		t.Errorf("the task is in the host's user namespace")
	}
	rootfs := filepath.Join(e.Dir, "containerd", "state", "io.containerd.runtime.v2.task", e.Namespace, id, "rootfs")
	for _, p := range []string{"bin/busybox", "tmp/written"} {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(rootfs, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 100000 || st.Gid != 100000 {
			t.Errorf("%s on the host's rootfs mount: %d:%d, want 100000:100000", p, st.Uid, st.Gid)
		}
	}
	// No chowned copy of the image: only the container's own snapshot.
	if after := len(snapshotLines(e.MustCtr("snapshots", sn, "ls"))); after != before+1 {
		t.Errorf("%d snapshots before, %d with the container: a remapped copy was made:\n%s", before, after, e.MustCtr("snapshots", sn, "ls"))
	}
}

// TestUserNamespaceHardLinks starts a user-namespaced container with
// tupper's runtime on the idmapped snapshot of the layers image, whose
// hard links defeat ctr's own chown walk (containerd's client visits a
// hard-linked inode once per link and fails on the second visit, "container
// ID 100000 cannot be mapped"): the idmapped mount needs no walk, so the
// container starts, its hard links are still one inode, owned by root
// inside. (How long such starts take is hack/bench's business.)
func TestUserNamespaceHardLinks(t *testing.T) {
	e := NewEnv(t)
	e.requireTupper() // remap-ids is tupper's capability
	image := e.importImage("layers")
	args := append(append(append([]string{"run", "--rm", "--snapshotter=" + e.Snapshotter}, e.tupperUserns()...), usernsFlags...),
		image, uniqueID("userns-links"), "sh", "-c", "id -u; stat -c '%h %u:%g %i' /data/hard/orig /data/hard/link /data/hard-too")
	out := e.MustCtr(args...)
	f := strings.Split(strings.TrimSpace(out), "\n")
	if len(f) != 4 || f[0] != "0" || f[1] != f[2] || f[1] != f[3] || !strings.HasPrefix(f[1], "3 0:0 ") {
		t.Fatalf("inside the user namespace: %q, want uid 0 and three names of one inode with 3 links, owned by 0:0", out)
	}
}

// TestUserNamespaceLikeRunc runs the same user-namespaced container with
// runc and with tupper (both on the idmapped snapshot) and compares what
// each shows from inside: id maps, capability sets, ids, the mount table
// (mount points, types and options) and /dev's owners.
func TestUserNamespaceLikeRunc(t *testing.T) {
	e := NewEnv(t)
	e.requireTupper() // remap-ids is tupper's capability
	sn := "--snapshotter=" + e.Snapshotter
	image := e.importImage("busybox")
	probe := `cat /proc/self/uid_map /proc/self/gid_map; grep ^Cap /proc/self/status; id;
awk '{ for (i = 7; $i != "-"; i++) ; print $5, $(i+1), $6, $(i+3) }' /proc/self/mountinfo | sed -e 's/,inode64//' -e 's/,subvolid=[0-9]*,subvol=[^ ]*//' | sort;
ls -ln /dev | awk 'NR > 1 { print $1, $3, $4, $NF }'`
	run := func(runtime []string, name string) string {
		args := append(append(append([]string{"run", "--rm", sn}, runtime...), usernsFlags...), image, uniqueID(name), "sh", "-c", probe)
		return e.MustCtr(args...)
	}
	runc := run(nil, "runc")
	tupper := run(e.tupperUserns(), "tupper")
	// One known difference: runc's nsexec makes the ipc namespace as uid
	// 0 of the user namespace but still with the host's gid 0, so its
	// mqueue root's group is unmapped (65534); tupper's helper is root
	// of the namespace in both ids when it makes it.
	runc = strings.Replace(runc, "drwxrwxrwt 0 65534 mqueue", "drwxrwxrwt 0 0 mqueue", 1)
	if runc != tupper {
		t.Errorf("runc and tupper differ (-runc +tupper):\n%s", lineDiff(runc, tupper))
	}
	t.Logf("runc's view:\n%s", runc)
}

// lineDiff lists the lines only in a (-) or only in b (+).
func lineDiff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if count[l] > 0 {
			out = append(out, "-"+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if count[l] < 0 {
			out = append(out, "+"+l)
		}
	}
	return strings.Join(out, "\n")
}

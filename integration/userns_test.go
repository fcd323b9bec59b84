package integration

import (
	"strings"
	"testing"
)

// TestUserNamespaceRemap runs a user-namespaced container on the tupper
// snapshotter with remap-ids: containerd gets an idmapped bind mount of the
// snapshot instead of a chowned copy. Inside, root owns the image's files
// and can write, and no remapped copy of the layers was made. (ctr needs
// --remap-labels to hand the mapping to the snapshotter; without it ctr
// always makes a chowned copy. CRI passes the labels itself.)
func TestUserNamespaceRemap(t *testing.T) {
	e := NewEnv(t)
	e.requireTupper() // remap-ids is tupper's capability
	sn := "--snapshotter=" + e.Snapshotter
	image := e.importImage("busybox")
	before := len(snapshotLines(e.MustCtr("snapshots", sn, "ls")))

	out := e.MustCtr("run", "--rm", sn, "--remap-labels", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", image, uniqueID("userns"),
		"sh", "-c", "cat /proc/self/uid_map; id -u; stat -c %u:%g /bin/busybox; touch /tmp/written && stat -c %u:%g /tmp/written")
	fields := strings.Fields(out)
	want := []string{"0", "100000", "65536", "0", "0:0", "0:0"}
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Fatalf("inside the user namespace: got %q, want %q", out, strings.Join(want, " "))
	}
	// The image's layers were not copied and chowned: the container's own
	// snapshot was the only one added (and --rm removed it).
	if after := len(snapshotLines(e.MustCtr("snapshots", sn, "ls"))); after != before {
		t.Fatalf("%d snapshots before, %d after: a remapped copy was made:\n%s", before, after, e.MustCtr("snapshots", sn, "ls"))
	}
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
)

// busyboxLayer is a minimal root filesystem around a static busybox.
func busyboxLayer(busybox string) (layer, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return layer{}, fmt.Errorf("reading busybox (apt-get install busybox-static): %w", err)
	}
	// --list-full names each applet with its conventional directory
	// ("bin/ls", "usr/bin/awk", "sbin/ip").
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return layer{}, fmt.Errorf("%s --list-full: %w", busybox, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a == "bin/busybox" || !strings.Contains(a, "/") {
			continue // the binary itself; "linuxrc"
		}
		applets = append(applets, a)
	}
	sort.Strings(applets)

	es := []entry{
		dir("bin", 0o755, 0, 0),
		dir("dev", 0o755, 0, 0),
		dir("etc", 0o755, 0, 0),
		dir("home", 0o755, 0, 0),
		dir("home/tupper", 0o755, 1000, 1000),
		dir("proc", 0o555, 0, 0),
		dir("root", 0o700, 0, 0),
		dir("sbin", 0o755, 0, 0),
		dir("sys", 0o555, 0, 0),
		dir("tmp", 0o1777, 0, 0),
		dir("usr", 0o755, 0, 0),
		dir("usr/bin", 0o755, 0, 0),
		dir("usr/sbin", 0o755, 0, 0),
		dir("var", 0o755, 0, 0),
		dir("var/tmp", 0o1777, 0, 0),
		file("bin/busybox", 0o755, 0, 0, string(bin)),
		file("etc/passwd", 0o644, 0, 0,
			"root:x:0:0:root:/root:/bin/sh\n"+
				"tupper:x:1000:1000:tupper:/home/tupper:/bin/sh\n"+
				"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
		file("etc/group", 0o644, 0, 0,
			"root:x:0:\n"+
				"tupper:x:1000:\n"+
				"nogroup:x:65534:\n"),
		file("etc/hostname", 0o644, 0, 0, "tupper\n"),
	}
	for _, a := range applets {
		es = append(es, symlink(a, "/bin/busybox"))
	}
	return layer{comment: "busybox", entries: es}, nil
}

// testLayers are stacked on the busybox layer by -kind layers. Every name
// lives under /data. What the merged rootfs must look like is written, by
// hand and independently of this code, in layers-rootfs.txt; the
// integration test checks a container's view against that file.
func testLayers() []layer {
	lower := layer{comment: "lower: links, owners, modes, victims", entries: []entry{
		dir("data", 0o755, 0, 0),

		// Three names for one inode, across two directories.
		dir("data/hard", 0o755, 0, 0),
		file("data/hard/orig", 0o644, 0, 0, "hardlink-data\n"),
		hardlink("data/hard/link", "data/hard/orig"),
		hardlink("data/hard-too", "data/hard/orig"),

		dir("data/sym", 0o755, 0, 0),
		symlink("data/sym/rel", "../hard/orig"),
		symlink("data/sym/abs", "/data/hard/orig"),
		symlink("data/sym/dir", "../owned"),
		symlink("data/sym/dangling", "/does/not/exist"),

		dir("data/owned", 0o755, 0, 0),
		file("data/owned/u1000", 0o640, 1000, 1000, "u1000\n"),
		dir("data/owned/d123", 0o750, 123, 456),
		file("data/owned/d123/f", 0o600, 123, 456, "f\n"),
		file("data/owned/chowned", 0o644, 0, 0, "chowned\n"),

		dir("data/modes", 0o755, 0, 0),
		file("data/modes/setuid", 0o4755, 0, 0, "#!/bin/sh\necho setuid\n"),
		file("data/modes/setgid", 0o2755, 0, 456, "#!/bin/sh\necho setgid\n"),
		file("data/modes/ro", 0o444, 0, 0, "ro\n"),
		dir("data/modes/sticky", 0o1777, 0, 0),

		// Victims of the next layer's whiteouts.
		dir("data/whiteout", 0o755, 0, 0),
		file("data/whiteout/keep", 0o644, 0, 0, "keep\n"),
		file("data/whiteout/gone", 0o644, 0, 0, "gone\n"),

		dir("data/opaque", 0o755, 0, 0),
		file("data/opaque/old1", 0o644, 0, 0, "old1\n"),
		dir("data/opaque/olddir", 0o755, 0, 0),
		file("data/opaque/olddir/x", 0o644, 0, 0, "x\n"),

		dir("data/deldir", 0o755, 0, 0),
		file("data/deldir/a", 0o644, 0, 0, "a\n"),
		dir("data/deldir/sub", 0o755, 0, 0),
		file("data/deldir/sub/b", 0o644, 0, 0, "b\n"),

		dir("data/recreated", 0o755, 0, 0),
		file("data/recreated/old", 0o644, 0, 0, "old\n"),

		file("data/modified", 0o644, 0, 0, "v1\n"),
	}}

	upper := layer{comment: "upper: whiteouts, opaque dir, deleted dirs", entries: []entry{
		dir("data", 0o755, 0, 0),
		whiteout("data/deldir"),
		whiteout("data/recreated"),
		file("data/modified", 0o644, 0, 0, "v2\n"),
		file("data/added", 0o644, 0, 0, "added\n"),

		dir("data/whiteout", 0o755, 0, 0),
		whiteout("data/whiteout/gone"),

		dir("data/opaque", 0o755, 0, 0),
		opaque("data/opaque"),
		file("data/opaque/new1", 0o644, 0, 0, "new1\n"),
		dir("data/opaque/newdir", 0o755, 0, 0),
		file("data/opaque/newdir/y", 0o644, 0, 0, "y\n"),
	}}

	top := layer{comment: "top: recreate a deleted dir, change owner only", entries: []entry{
		dir("data", 0o755, 0, 0),
		dir("data/recreated", 0o700, 1000, 1000),
		file("data/recreated/new", 0o644, 1000, 1000, "new\n"),
		dir("data/owned", 0o755, 0, 0),
		file("data/owned/chowned", 0o600, 123, 456, "chowned\n"),
	}}

	return []layer{lower, upper, top}
}

package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// resolveInRoot resolves the container path unsafe inside root, following
// symlinks the way the container will see them, and refuses paths that
// escape root through a symlink.
//
// Absolute symlink targets are container paths, so they restart at root
// (e.g. /var/run -> /run); that is normal and allowed. A relative target
// whose ".." climbs above root is an escape and is refused, as is a ".."
// that only makes sense on the host. A plain ".." at "/" in the
// destination itself is clamped, as the kernel does at a root.
//
// The checked path is then produced by filepath-securejoin, so the final
// resolution is the well-tested one.
func resolveInRoot(root, unsafe string) (string, error) {
	type comp struct {
		name string
		link bool
	}
	var todo []comp
	for _, c := range strings.Split(filepath.Clean("/"+unsafe), "/") {
		todo = append(todo, comp{name: c})
	}
	var cur []string
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c.name {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				if c.link {
					return "", invalid("path %q escapes the rootfs through a symlink", unsafe)
				}
				continue
			}
			cur = cur[:len(cur)-1]
			continue
		}
		full := filepath.Join(append([]string{root}, append(cur, c.name)...)...)
		st, err := os.Lstat(full)
		if err != nil || st.Mode()&os.ModeSymlink == 0 {
			cur = append(cur, c.name)
			continue
		}
		links++
		if links > 255 {
			return "", invalid("path %q: too many levels of symbolic links", unsafe)
		}
		target, err := os.Readlink(full)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			cur = nil
		}
		var next []comp
		for _, t := range strings.Split(target, "/") {
			next = append(next, comp{name: t, link: true})
		}
		todo = append(next, todo...)
	}
	p, err := securejoin.SecureJoin(root, unsafe)
	if err != nil {
		return "", err
	}
	if want := filepath.Join(append([]string{root}, cur...)...); p != want {
		return "", fmt.Errorf("path %q resolves inconsistently (%s vs %s)", unsafe, p, want)
	}
	return p, nil
}

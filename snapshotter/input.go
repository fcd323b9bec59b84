package snapshotter

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
)

// LabelMaxSize on Prepare caps what the container may write into its snapshot.
// The value is a byte count ("10485760") or a size with a binary unit ("10MiB", "1g").
const LabelMaxSize = "containerd.io/snapshot/max-size"

// maxKeyLen keeps keys well inside bolt's limits and any sane log line.
const maxKeyLen = 4096

// validateKey rejects keys that could be mistaken for paths leaving the
// snapshotter root. Keys are never used as paths here (subvolumes are named by
// numeric id), and clients use "/" freely ("namespace/id/name" in containerd,
// absolute paths in its test suite), but "." or ".." elements and control
// characters only ever come from a confused or hostile client.
func validateKey(what, key string) error {
	if key == "" {
		return fmt.Errorf("%s must not be empty: %w", what, errdefs.ErrInvalidArgument)
	}
	if len(key) > maxKeyLen {
		return fmt.Errorf("%s is %d bytes, longer than %d: %w", what, len(key), maxKeyLen, errdefs.ErrInvalidArgument)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%s %q is not UTF-8: %w", what, key, errdefs.ErrInvalidArgument)
	}
	for _, r := range key {
		if r == 0 || r == '\n' || r == '\r' {
			return fmt.Errorf("%s %q contains a control character: %w", what, key, errdefs.ErrInvalidArgument)
		}
	}
	for _, elem := range strings.Split(key, "/") {
		if elem == ".." || elem == "." {
			return fmt.Errorf("%s %q contains a %q path element: %w", what, key, elem, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// validateLabels rejects labels that are not UTF-8, as containerd's API
// (protobuf strings) does: the metadata journal records them as JSON
// strings, which could not give them back byte for byte.
func validateLabels(labels map[string]string) error {
	for k, v := range labels {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("label %q=%q is not UTF-8: %w", k, v, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// parseMaxSize reads LabelMaxSize. An absent label means no limit (0).
func parseMaxSize(labels map[string]string) (uint64, error) {
	v, ok := labels[LabelMaxSize]
	if !ok {
		return 0, nil
	}
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseUint(v, 10, 64); err == nil && n > 0 {
		return n, nil
	}
	n, err := units.RAMInBytes(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("label %s=%q is not a positive size (bytes, or a number with a unit such as 512MiB): %w",
			LabelMaxSize, labels[LabelMaxSize], errdefs.ErrInvalidArgument)
	}
	return uint64(n), nil
}

// validateIDMapLabels checks the uid/gid mapping labels ("ctr:host:size"
// triples, comma separated) so that a bad one fails Prepare, not the mount.
// A mapping needs both labels.
func validateIDMapLabels(labels map[string]string) error {
	uid, hasUID := labels[snapshots.LabelSnapshotUIDMapping]
	gid, hasGID := labels[snapshots.LabelSnapshotGIDMapping]
	if !hasUID && !hasGID {
		return nil
	}
	if hasUID != hasGID {
		return fmt.Errorf("labels %s and %s must be given together: %w", snapshots.LabelSnapshotUIDMapping, snapshots.LabelSnapshotGIDMapping, errdefs.ErrInvalidArgument)
	}
	for label, v := range map[string]string{snapshots.LabelSnapshotUIDMapping: uid, snapshots.LabelSnapshotGIDMapping: gid} {
		for _, m := range strings.Split(v, ",") {
			parts := strings.Split(m, ":")
			ok := len(parts) == 3
			for _, p := range parts {
				n, err := strconv.ParseUint(p, 10, 32)
				ok = ok && err == nil && n < 1<<32-1
			}
			if size, _ := strconv.ParseUint(parts[len(parts)-1], 10, 32); !ok || size == 0 {
				return fmt.Errorf("label %s=%q: %q is not containerID:hostID:size: %w", label, v, m, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

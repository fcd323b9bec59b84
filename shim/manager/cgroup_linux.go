package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	optionspb "github.com/tupper/tupper/proto/options"
	"github.com/tupper/tupper/shim/cgroups"
	"github.com/tupper/tupper/shim/options"
)

// runtimeOptions returns tupper's runtime options for the task being
// started, which containerd passes among the bootstrap extensions, or nil
// when it sent none.
func runtimeOptions(params *bootapi.BootstrapParams) (*optionspb.Options, error) {
	for _, ext := range params.GetExtensions() {
		if v := ext.GetValue(); options.IsOptions(v) {
			return options.FromAny(v)
		}
	}
	return nil, nil
}

// joinShimCgroup moves the shim process pid into the cgroup named by the
// ShimCgroup runtime option, as runc's shim does, so that the shim's
// memory and CPU are accounted where the caller wants (containerd's
// TestShimInCgroup). The cgroup must exist; a missing one fails the
// start, naming it, as with runc.
func joinShimCgroup(opts *optionspb.Options, pid int) error {
	path := opts.GetShimCgroup()
	if path == "" {
		return nil
	}
	m, err := cgroups.Load(path, cgroups.IsSystemdPath(path))
	if err != nil {
		return fmt.Errorf("shim cgroup %s: %w", path, err)
	}
	if err := m.Add(pid); err != nil {
		return fmt.Errorf("move the shim into cgroup %s: %w", path, err)
	}
	return nil
}

// removeCgroup deletes the cgroup of the container whose bundle is dir,
// killing what is still in it, after its shim is gone. The bundle's
// config.json names it; the path's form tells which driver made it
// (slice:prefix:name is systemd's). A spec without cgroupsPath got
// cgroups.DefaultPath when it asked for resources.
func removeCgroup(ctx context.Context, dir, id string) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		log.G(ctx).WithError(err).Warn("read spec to find the cgroup")
		return
	}
	// Only the two fields: decoding a whole specs.Spec costs this
	// short-lived process milliseconds of reflection.
	var spec struct {
		Linux *struct {
			CgroupsPath string          `json:"cgroupsPath"`
			Resources   json.RawMessage `json:"resources"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(b, &spec); err != nil || spec.Linux == nil {
		return
	}
	paths := []string{spec.Linux.CgroupsPath}
	if paths[0] == "" {
		if r := string(spec.Linux.Resources); r == "" || r == "null" {
			return
		}
		paths = []string{cgroups.DefaultPath(id, false), cgroups.DefaultPath(id, true)}
	}
	for _, p := range paths {
		systemd := cgroups.IsSystemdPath(p)
		if systemd {
			if _, err := os.Stat("/run/systemd/system"); err != nil {
				continue
			}
		}
		m, err := cgroups.Load(p, systemd)
		if err != nil {
			if !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, os.ErrNotExist) {
				log.G(ctx).WithError(err).WithField("cgroup", p).Warn("load cgroup")
			}
			continue
		}
		if err := m.Delete(); err != nil {
			log.G(ctx).WithError(err).WithField("cgroup", p).Warn("delete cgroup")
		}
	}
}

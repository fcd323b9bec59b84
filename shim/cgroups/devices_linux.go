package cgroups

import (
	"fmt"

	"github.com/containerd/errdefs"
	ocgroups "github.com/opencontainers/cgroups"
	// Sets ocgroups.DevicesSetV2: runc's own eBPF device program.
	_ "github.com/opencontainers/cgroups/devices"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// deviceRules turns the spec's device rules into runc's, as runc reads
// them: no type means every type, no major or minor every number. A rule
// of another type or access is refused, naming it.
func deviceRules(in []specs.LinuxDeviceCgroup) ([]*devconfig.Rule, error) {
	out := make([]*devconfig.Rule, 0, len(in))
	for i, d := range in {
		r := &devconfig.Rule{Type: devconfig.WildcardDevice, Major: devconfig.Wildcard, Minor: devconfig.Wildcard,
			Permissions: devconfig.Permissions(d.Access), Allow: d.Allow}
		if d.Type != "" {
			r.Type = devconfig.Type(d.Type[0])
		}
		if d.Major != nil {
			r.Major = *d.Major
		}
		if d.Minor != nil {
			r.Minor = *d.Minor
		}
		if len(d.Type) > 1 || !r.Type.CanCgroup() || !r.Permissions.IsValid() ||
			r.Major < devconfig.Wildcard || r.Minor < devconfig.Wildcard || r.Major > 1<<32-1 || r.Minor > 1<<32-1 {
			return nil, fmt.Errorf("linux.resources.devices[%d]: type %q, major %d, minor %d, access %q is not a device rule: %w",
				i, d.Type, r.Major, r.Minor, d.Access, errdefs.ErrInvalidArgument)
		}
		out = append(out, r)
	}
	return out, nil
}

// setDevicesV2 gives the v2 cgroup at dir the eBPF program that enforces
// rules, replacing one set before, with runc's own code. containerd's
// cgroup2 package is not used for this: it drops the rules when converting
// a spec, panics on a rule without a major or minor, and lets a rule for
// one access mode through an open that asks for more.
func setDevicesV2(dir string, rules []specs.LinuxDeviceCgroup) error {
	if len(rules) == 0 {
		// No program, every device, as with the v1 files. runc would
		// deny all, but always has its default rules; the shim's
		// Placement always passes them (WithDefaultDevices).
		return nil
	}
	r, err := deviceRules(rules)
	if err != nil {
		return err
	}
	if err := ocgroups.DevicesSetV2(dir, &ocgroups.Resources{Devices: r}); err != nil {
		return fmt.Errorf("loading the device rules into %s: %w", dir, err)
	}
	return nil
}

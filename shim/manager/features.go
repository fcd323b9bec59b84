package manager

import (
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/seccomp"
	"github.com/tupper/tupper/shim/security"
)

// Features lists what tupper really implements today. CRI reads it (for
// example "rro" in MountOptions turns on recursive read-only mounts).
func Features() *features.Features {
	opts := []string{
		"defaults", "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec",
		"sync", "async", "dirsync", "mand", "nomand", "atime", "noatime", "diratime",
		"nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime",
		"bind", "rbind", "private", "rprivate", "shared", "rshared", "slave", "rslave",
		"unbindable", "runbindable",
	}
	opts = append(opts, container.RecursiveMountOptions()...)
	sort.Strings(opts)
	no, yes := false, true
	caps := security.KnownCapabilities()
	return &features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		Annotations:   checkpointAnnotations(),
		Hooks:         []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
		MountOptions:  opts,
		Linux: &features.Linux{
			Namespaces: []string{
				string(specs.PIDNamespace), string(specs.NetworkNamespace), string(specs.MountNamespace),
				string(specs.IPCNamespace), string(specs.UTSNamespace), string(specs.CgroupNamespace),
				string(specs.UserNamespace), string(specs.TimeNamespace),
			},
			Capabilities: caps,
			Seccomp:      seccomp.Features(),
			Apparmor:     &features.Apparmor{Enabled: ptr(security.AppArmorEnabled())},
			Selinux:      &features.Selinux{Enabled: ptr(security.SELinuxEnabled())},
			// cgroup v1 and v2, cgroupfs and systemd drivers (shim/cgroups);
			// no user-scoped systemd, and rdma only where the host has it.
			Cgroup: &features.Cgroup{V1: &yes, V2: &yes, Systemd: &yes, SystemdUser: &no, Rdma: &yes},
			// Spec bind mounts with uidMappings/gidMappings become
			// idmapped mounts (shim/container/idmap_linux.go). With "user"
			// above, this is what CRI needs to run user-namespaced pods.
			MountExtensions: &features.MountExtensions{IDMap: &features.IDMap{Enabled: &yes}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

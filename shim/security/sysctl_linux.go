package security

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// sysctlNamespace says which namespace a sysctl belongs to, or "" when it
// is global and writing it from a container would change the host.
func sysctlNamespace(key string) specs.LinuxNamespaceType {
	switch {
	case key == "kernel.sem", key == "kernel.msgmax", key == "kernel.msgmnb", key == "kernel.msgmni",
		key == "kernel.shmmax", key == "kernel.shmall", key == "kernel.shmmni", key == "kernel.shm_rmid_forced",
		strings.HasPrefix(key, "fs.mqueue."):
		return specs.IPCNamespace
	case key == "kernel.hostname", key == "kernel.domainname":
		return specs.UTSNamespace
	case strings.HasPrefix(key, "net."):
		return specs.NetworkNamespace
	}
	return ""
}

// CheckSysctls refuses a sysctl that is not namespaced, or whose namespace
// the container shares with the host (no entry for it in linux.namespaces).
func CheckSysctls(spec *specs.Spec) error {
	if spec.Linux == nil {
		return nil
	}
	own := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range spec.Linux.Namespaces {
		own[ns.Type] = true
	}
	for key := range spec.Linux.Sysctl {
		if strings.Contains(key, "..") || strings.ContainsAny(key, "/\x00") {
			return fmt.Errorf("linux.sysctl %q is not a sysctl name: %w", key, errdefs.ErrInvalidArgument)
		}
		ns := sysctlNamespace(key)
		if ns == "" {
			return fmt.Errorf("linux.sysctl %q is not namespaced: setting it from a container would change the whole host, so tupper refuses it: %w", key, errdefs.ErrInvalidArgument)
		}
		if !own[ns] {
			return fmt.Errorf("linux.sysctl %q belongs to the %s namespace, which this container shares with the host: %w", key, ns, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// ApplySysctls writes the sysctls through procRoot (the container's /proc,
// mounted in its namespaces).
func ApplySysctls(procRoot string, sysctls map[string]string) error {
	for key, value := range sysctls {
		p := filepath.Join(procRoot, "sys", strings.ReplaceAll(key, ".", "/"))
		if err := os.WriteFile(p, []byte(value), 0); err != nil {
			return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
		}
	}
	return nil
}

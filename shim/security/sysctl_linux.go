package security

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// SysctlNamespace says which namespace a sysctl belongs to, or "" when it
// is global and writing it from a container would change the host.
func SysctlNamespace(key string) specs.LinuxNamespaceType {
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

// isHostNetns reports whether path is this process' (the runtime's, the
// host's) network namespace, which a container joining it by path must
// not change.
func isHostNetns(path string) bool {
	var a, b unix.Stat_t
	if unix.Stat(path, &a) != nil || unix.Stat("/proc/self/ns/net", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// conflictingField is the spec field a sysctl would override, as runc
// refuses: kernel.hostname against hostname, kernel.domainname against
// domainname.
func conflictingField(spec *specs.Spec, key string) string {
	switch {
	case key == "kernel.hostname" && spec.Hostname != "":
		return "hostname"
	case key == "kernel.domainname" && spec.Domainname != "":
		return "domainname"
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
	hostNetns := false
	for _, ns := range spec.Linux.Namespaces {
		own[ns.Type] = true
		if ns.Type == specs.NetworkNamespace && ns.Path != "" {
			hostNetns = isHostNetns(ns.Path)
		}
	}
	for key := range spec.Linux.Sysctl {
		if strings.Contains(key, "..") || strings.ContainsAny(key, "/\x00") {
			return fmt.Errorf("linux.sysctl %q is not a sysctl name: %w", key, errdefs.ErrInvalidArgument)
		}
		ns := SysctlNamespace(key)
		if ns == "" {
			return fmt.Errorf("linux.sysctl %q is not namespaced: setting it from a container would change the whole host, so tupper refuses it: %w", key, errdefs.ErrInvalidArgument)
		}
		if !own[ns] || (ns == specs.NetworkNamespace && hostNetns) {
			return fmt.Errorf("linux.sysctl %q belongs to the %s namespace, which this container shares with the host: %w", key, ns, errdefs.ErrInvalidArgument)
		}
		if conflict := conflictingField(spec, key); conflict != "" {
			return fmt.Errorf("linux.sysctl %q conflicts with the spec's %s field: %w", key, conflict, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// ApplySysctls writes the sysctls of the calling process' namespaces (see
// procfs_linux.go for how).
func ApplySysctls(sysctls map[string]string) error {
	for key, value := range sysctls {
		if err := writeProcRoot("sys/"+strings.ReplaceAll(key, ".", "/"), value); err != nil {
			return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
		}
	}
	return nil
}

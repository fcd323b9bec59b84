package container

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Stdio holds the files the container process gets as fds 0, 1 and 2.
// A nil entry means /dev/null. They are ignored when the process has a
// terminal: then the process gets the slave side of a pty allocated inside
// the container, and the master is returned to the caller.
type Stdio struct {
	Stdin, Stdout, Stderr *os.File
}

// nsFlags maps OCI namespace types to clone flags.
var nsFlags = map[specs.LinuxNamespaceType]uintptr{
	specs.PIDNamespace:     unix.CLONE_NEWPID,
	specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.MountNamespace:   unix.CLONE_NEWNS,
	specs.IPCNamespace:     unix.CLONE_NEWIPC,
	specs.UTSNamespace:     unix.CLONE_NEWUTS,
	specs.UserNamespace:    unix.CLONE_NEWUSER,
	specs.CgroupNamespace:  unix.CLONE_NEWCGROUP,
	specs.TimeNamespace:    unix.CLONE_NEWTIME,
}

// procNsName is the file name under /proc/<pid>/ns for each type.
var procNsName = map[specs.LinuxNamespaceType]string{
	specs.PIDNamespace:     "pid",
	specs.NetworkNamespace: "net",
	specs.MountNamespace:   "mnt",
	specs.IPCNamespace:     "ipc",
	specs.UTSNamespace:     "uts",
	specs.UserNamespace:    "user",
	specs.CgroupNamespace:  "cgroup",
	specs.TimeNamespace:    "time",
}

// ValidationError reports a spec that cannot be run. Create returns it
// before anything has been mounted or started.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return "invalid spec: " + e.Msg }

func invalid(format string, a ...any) error {
	return &ValidationError{Msg: fmt.Sprintf(format, a...)}
}

// IsInvalidSpec reports whether err is a spec validation error.
func IsInvalidSpec(err error) bool {
	var v *ValidationError
	return errors.As(err, &v)
}

// rootfsPath returns the absolute rootfs path of spec inside bundle.
// A relative root.path is resolved against the bundle, as the OCI spec
// says, but it must stay inside the bundle.
func rootfsPath(bundle string, spec *specs.Spec) (string, error) {
	if spec.Root == nil || spec.Root.Path == "" {
		return "", invalid("root.path is empty")
	}
	p := spec.Root.Path
	if !filepath.IsAbs(p) {
		if bundle == "" || !filepath.IsAbs(bundle) {
			return "", invalid("root.path %q is relative but there is no absolute bundle path to resolve it against", p)
		}
		clean := filepath.Clean(p)
		if clean == ".." || strings.HasPrefix(clean, "../") {
			return "", invalid("relative root.path %q escapes the bundle %s", p, bundle)
		}
		p = filepath.Join(bundle, clean)
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", invalid("root.path: %v", err)
	}
	if !st.IsDir() {
		return "", invalid("root.path %s is not a directory", p)
	}
	return p, nil
}

// validate checks the parts of the spec that can be checked without
// touching the system.
func validate(spec *specs.Spec) error {
	if spec.Process == nil {
		return invalid("process is missing")
	}
	if err := validateProcess(spec.Process); err != nil {
		return err
	}
	if spec.Linux == nil {
		return invalid("linux section is missing")
	}
	seen := map[specs.LinuxNamespaceType]bool{}
	hasMnt := false
	for _, ns := range spec.Linux.Namespaces {
		if _, ok := nsFlags[ns.Type]; !ok {
			return invalid("unknown namespace type %q", ns.Type)
		}
		if seen[ns.Type] {
			return invalid("namespace type %q listed twice", ns.Type)
		}
		seen[ns.Type] = true
		switch ns.Type {
		case specs.UserNamespace:
			if ns.Path == "" {
				if err := validateIDMaps(spec.Linux); err != nil {
					return err
				}
			}
		case specs.MountNamespace:
			if ns.Path != "" {
				return invalid("joining an existing mount namespace (%s) for a new container is not supported", ns.Path)
			}
			hasMnt = true
		}
		if ns.Path != "" && !filepath.IsAbs(ns.Path) {
			return invalid("namespace path %q for %s must be absolute", ns.Path, ns.Type)
		}
	}
	if !hasMnt {
		return invalid("a new mount namespace is required")
	}
	if !seen[specs.UserNamespace] && (len(spec.Linux.UIDMappings) > 0 || len(spec.Linux.GIDMappings) > 0) {
		return invalid("linux.uidMappings/gidMappings are set but there is no user namespace")
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.TimeNamespace && ns.Path != "" && len(spec.Linux.TimeOffsets) > 0 {
			return invalid("linux.timeOffsets apply to a new time namespace, not to the joined %s", ns.Path)
		}
	}
	if len(spec.Linux.TimeOffsets) > 0 && !seen[specs.TimeNamespace] {
		return invalid("linux.timeOffsets are set but there is no time namespace")
	}
	for clock := range spec.Linux.TimeOffsets {
		if clock != "monotonic" && clock != "boottime" {
			return invalid("linux.timeOffsets: unknown clock %q (monotonic or boottime)", clock)
		}
	}
	if spec.Hostname != "" && !seen[specs.UTSNamespace] {
		return invalid("hostname is set but there is no uts namespace")
	}
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.Destination) {
			return invalid("mount destination %q is not absolute", m.Destination)
		}
		if (len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0) && !isBind(m) {
			return invalid("mount %s: uid/gid mappings are supported on bind mounts only", m.Destination)
		}
		if (len(m.UIDMappings) > 0) != (len(m.GIDMappings) > 0) {
			return invalid("mount %s: an idmapped mount needs both uidMappings and gidMappings", m.Destination)
		}
	}
	return nil
}

// validateIDMaps checks the mappings of a new user namespace. Root of the
// namespace must be mapped: the helper builds the container as that root
// (runc's nsexec likewise becomes uid/gid 0 before it goes on).
func validateIDMaps(l *specs.Linux) error {
	if len(l.UIDMappings) == 0 || len(l.GIDMappings) == 0 {
		return invalid("a new user namespace needs linux.uidMappings and linux.gidMappings")
	}
	for name, maps := range map[string][]specs.LinuxIDMapping{"uid": l.UIDMappings, "gid": l.GIDMappings} {
		root := false
		for _, m := range maps {
			if m.Size == 0 {
				return invalid("linux.%sMappings: empty mapping %+v", name, m)
			}
			if m.ContainerID == 0 {
				root = true
			}
		}
		if !root {
			return invalid("linux.%sMappings must map %s 0 (the container's root)", name, name)
		}
	}
	return nil
}

func validateProcess(p *specs.Process) error {
	if len(p.Args) == 0 || p.Args[0] == "" {
		return invalid("process.args is empty")
	}
	if p.Cwd == "" || !filepath.IsAbs(p.Cwd) {
		return invalid("process.cwd %q must be an absolute path", p.Cwd)
	}
	for _, rl := range p.Rlimits {
		if _, ok := rlimitNames[rl.Type]; !ok {
			return invalid("unknown rlimit %q", rl.Type)
		}
	}
	return validateIDs(p.User)
}

// validateIDs refuses ids the kernel cannot take: 4294967295 is (uid_t)-1,
// which setresuid reads as "leave unchanged", so the process would stay
// root (containerd's CVE-2024-40635).
func validateIDs(u specs.User) error {
	ids := append([]uint32{u.UID, u.GID}, u.AdditionalGids...)
	for _, id := range ids {
		if id > math.MaxInt32 {
			return invalid("process.user id %d is out of range (at most %d)", id, math.MaxInt32)
		}
	}
	return nil
}

var rlimitNames = map[string]int{
	"RLIMIT_AS":         unix.RLIMIT_AS,
	"RLIMIT_CORE":       unix.RLIMIT_CORE,
	"RLIMIT_CPU":        unix.RLIMIT_CPU,
	"RLIMIT_DATA":       unix.RLIMIT_DATA,
	"RLIMIT_FSIZE":      unix.RLIMIT_FSIZE,
	"RLIMIT_LOCKS":      unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK":    unix.RLIMIT_MEMLOCK,
	"RLIMIT_MSGQUEUE":   unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE":       unix.RLIMIT_NICE,
	"RLIMIT_NOFILE":     unix.RLIMIT_NOFILE,
	"RLIMIT_NPROC":      unix.RLIMIT_NPROC,
	"RLIMIT_RSS":        unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO":     unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME":     unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK":      unix.RLIMIT_STACK,
}

package container

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Ignored lists the parts of spec that this version accepts but does not
// enforce yet, so that a caller can say so instead of failing every CRI
// or ctr spec that carries them.
func Ignored(spec *specs.Spec) []string {
	var out []string
	add := func(cond bool, what string) {
		if cond {
			out = append(out, what)
		}
	}
	if l := spec.Linux; l != nil {
		add(l.IntelRdt != nil, "linux.intelRdt")
		add(l.MountLabel != "", "linux.mountLabel")
		add(len(l.NetDevices) > 0, "linux.netDevices")
	}
	if p := spec.Process; p != nil {
		add(p.ExecCPUAffinity != nil, "process.execCPUAffinity")
	}
	return out
}

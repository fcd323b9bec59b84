package cgroups

import specs "github.com/opencontainers/runtime-spec/specs-go"

// defaultDevices are allowed for every container after the spec's own
// rules, as runc does: creating any node (m), the standard /dev nodes, the
// pty ones (CRI's specs deny everything and rely on this for /dev/null,
// /dev/ptmx and /dev/pts/*), and /dev/net/tun.
var defaultDevices = func() []specs.LinuxDeviceCgroup {
	n := func(v int64) *int64 { return &v }
	rule := func(typ string, major, minor *int64, access string) specs.LinuxDeviceCgroup {
		return specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: major, Minor: minor, Access: access}
	}
	return []specs.LinuxDeviceCgroup{
		rule("c", nil, nil, "m"), rule("b", nil, nil, "m"),
		rule("c", n(1), n(3), "rwm"),    // null
		rule("c", n(1), n(8), "rwm"),    // random
		rule("c", n(1), n(7), "rwm"),    // full
		rule("c", n(5), n(0), "rwm"),    // tty
		rule("c", n(1), n(5), "rwm"),    // zero
		rule("c", n(1), n(9), "rwm"),    // urandom
		rule("c", n(136), nil, "rwm"),   // pts/*
		rule("c", n(5), n(2), "rwm"),    // ptmx
		rule("c", n(10), n(200), "rwm"), // net/tun
	}
}()

// WithDefaultDevices returns res with the default device rules appended to
// the spec's own (res itself is not changed).
func WithDefaultDevices(res *specs.LinuxResources) *specs.LinuxResources {
	out := specs.LinuxResources{}
	if res != nil {
		out = *res
	}
	out.Devices = append(append([]specs.LinuxDeviceCgroup(nil), out.Devices...), defaultDevices...)
	return &out
}

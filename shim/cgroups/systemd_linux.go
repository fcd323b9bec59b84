package cgroups

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// The systemd driver on the unified hierarchy: each container is a
// transient scope, started with the init helper's pid in the slice its
// cgroupsPath names, and delegated (Delegate=yes) as runc's driver does.
// The limits systemd has properties for are set as properties too: systemd
// rewrites a unit's cgroup files from its properties (on daemon-reload, or
// when any property changes), which would otherwise undo a limit written
// only to the files. Every resource is then written to the files as with
// the cgroupfs driver, which also covers what systemd has no property for
// (device rules as eBPF, io throttles, hugetlb, rdma).

// systemdTimeout bounds a start or stop job of a container's scope.
const systemdTimeout = 30 * time.Second

// systemdConn talks to systemd on its private socket, as root may: no
// broker in between and no bus handshake, which matters when many
// containers start at once (each shim connects for itself). The system
// bus is the fallback.
func systemdConn(ctx context.Context) (*sd.Conn, error) {
	c, err := sd.NewSystemdConnectionContext(ctx)
	if err != nil {
		c, err = sd.NewWithContext(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("systemd cgroup driver: connecting to systemd over D-Bus: %w", err)
	}
	return c, nil
}

func prop(name string, v any) sd.Property { return sd.Property{Name: name, Value: dbus.MakeVariant(v)} }

// startScope starts the scope unit with pid in it. A failed scope of the
// same name (an earlier container's, OOM-killed) is reset and the start
// tried once more.
func startScope(ctx context.Context, slice, unit string, pid int, r *cgroup2.Resources) error {
	conn, err := systemdConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	props := []sd.Property{
		sd.PropDescription("tupper container " + unit),
		sd.PropSlice(slice),
		prop("Delegate", true),
		prop("PIDs", []uint32{uint32(pid)}),
		prop("DefaultDependencies", false),
		prop("MemoryAccounting", true),
		prop("CPUAccounting", true),
		prop("IOAccounting", true),
		prop("TasksAccounting", true),
	}
	props = append(props, resourceProperties(r)...)
	for retry := true; ; retry = false {
		err = runJob(ctx, func(ch chan<- string) (int, error) {
			return conn.StartTransientUnitContext(ctx, unit, "replace", props, ch)
		})
		var de dbus.Error
		if err == nil || !retry || !errors.As(err, &de) || de.Name != "org.freedesktop.systemd1.UnitExists" {
			break
		}
		conn.ResetFailedUnitContext(ctx, unit)
	}
	if err != nil {
		conn.ResetFailedUnitContext(ctx, unit)
		return fmt.Errorf("starting systemd scope %s in %s: %w", unit, slice, err)
	}
	return nil
}

// stopScope stops the scope (a no-op for one that is gone) and forgets
// its failed state, so that no unit of the container's remains loaded.
func stopScope(ctx context.Context, unit string) error {
	conn, err := systemdConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	err = runJob(ctx, func(ch chan<- string) (int, error) {
		return conn.StopUnitContext(ctx, unit, "replace", ch)
	})
	var de dbus.Error
	if errors.As(err, &de) && de.Name == "org.freedesktop.systemd1.NoSuchUnit" {
		err = nil
	}
	conn.ResetFailedUnitContext(ctx, unit)
	if err != nil {
		return fmt.Errorf("stopping systemd scope %s: %w", unit, err)
	}
	return nil
}

// setScopeProperties gives a running scope new limits (Update).
func setScopeProperties(ctx context.Context, unit string, r *cgroup2.Resources) error {
	props := resourceProperties(r)
	if len(props) == 0 {
		return nil
	}
	conn, err := systemdConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetUnitPropertiesContext(ctx, unit, true, props...); err != nil {
		return fmt.Errorf("setting properties of systemd scope %s: %w", unit, err)
	}
	return nil
}

// runJob starts a systemd job and waits for its result.
func runJob(ctx context.Context, start func(chan<- string) (int, error)) error {
	ch := make(chan string, 1)
	if _, err := start(ch); err != nil {
		return err
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("systemd job %s", res)
		}
		return nil
	case <-time.After(systemdTimeout):
		return fmt.Errorf("systemd job not done after %v", systemdTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// infinity is systemd's "no limit" for byte, count and time properties.
func infinity(v int64) uint64 {
	if v < 0 {
		return math.MaxUint64
	}
	return uint64(v)
}

// resourceProperties are the unit properties for the limits systemd
// manages itself on the unified hierarchy.
func resourceProperties(r *cgroup2.Resources) []sd.Property {
	var props []sd.Property
	if m := r.Memory; m != nil {
		for name, v := range map[string]*int64{"MemoryMax": m.Max, "MemoryLow": m.Low, "MemoryHigh": m.High, "MemorySwapMax": m.Swap, "MemoryMin": m.Min} {
			if v != nil {
				props = append(props, prop(name, infinity(*v)))
			}
		}
	}
	if c := r.CPU; c != nil {
		if c.Weight != nil {
			props = append(props, prop("CPUWeight", *c.Weight))
		}
		if quota, period, ok := cpuMax(c.Max); ok {
			props = append(props, prop("CPUQuotaPeriodUSec", period))
			perSec := uint64(math.MaxUint64)
			if quota >= 0 {
				// systemd keeps CPU quota per second, in steps of 10 ms
				// (1% of a cpu): round up so the container gets at least
				// its quota.
				perSec = (uint64(quota)*1000000/period + 9999) / 10000 * 10000
			}
			props = append(props, prop("CPUQuotaPerSecUSec", perSec))
		}
		if bits, err := cpuBits(c.Cpus); err == nil && c.Cpus != "" {
			props = append(props, prop("AllowedCPUs", bits))
		}
		if bits, err := cpuBits(c.Mems); err == nil && c.Mems != "" {
			props = append(props, prop("AllowedMemoryNodes", bits))
		}
	}
	if p := r.Pids; p != nil && p.Max != 0 {
		props = append(props, prop("TasksMax", infinity(p.Max)))
	}
	return props
}

// cpuMax reads cpu.max's "quota period" ("max" quota: -1).
func cpuMax(m cgroup2.CPUMax) (quota int64, period uint64, ok bool) {
	f := strings.Fields(string(m))
	if len(f) != 2 {
		return 0, 0, false
	}
	period, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil || period == 0 {
		return 0, 0, false
	}
	if f[0] == "max" {
		return -1, period, true
	}
	quota, err = strconv.ParseInt(f[0], 10, 64)
	return quota, period, err == nil
}

// cpuBits turns a cpu or node list ("0-2,4") into the little-endian
// bitmask systemd's AllowedCPUs and AllowedMemoryNodes take.
func cpuBits(list string) ([]byte, error) {
	var bits []byte
	for _, part := range strings.Split(list, ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b > 8191 {
			return nil, fmt.Errorf("cpu list %q: bad element %q", list, part)
		}
		for i := a; i <= b; i++ {
			for len(bits) <= i/8 {
				bits = append(bits, 0)
			}
			bits[i/8] |= 1 << (i % 8)
		}
	}
	return bits, nil
}

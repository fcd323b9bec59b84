package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Check refuses resources this host cannot enforce, so a container never
// starts without a limit it asked for. It names the resource and the reason.
func Check(res *specs.LinuxResources) error {
	res, err := normalize(res) // a zero asks for nothing (normalize)
	if err != nil || res == nil {
		return err
	}
	need := func(controller, what string) error {
		if !hasController(controller) {
			return fmt.Errorf("%s needs the %s cgroup controller, which this host does not provide: %w", what, controller, errdefs.ErrFailedPrecondition)
		}
		return nil
	}
	var errs []error
	if m := res.Memory; m != nil {
		if m.Limit != nil || m.Reservation != nil || m.Swap != nil || m.Swappiness != nil || m.DisableOOMKiller != nil {
			errs = append(errs, need("memory", "linux.resources.memory"))
		}
		if m.Swap != nil && *m.Swap > 0 && !swapAccounting() {
			errs = append(errs, fmt.Errorf("linux.resources.memory.swap needs swap accounting, which this kernel has off (boot with swapaccount=1): %w", errdefs.ErrFailedPrecondition))
		}
	}
	if c := res.CPU; c != nil {
		if c.Shares != nil || c.Quota != nil || c.Period != nil || c.RealtimeRuntime != nil || c.RealtimePeriod != nil || c.Idle != nil {
			errs = append(errs, need("cpu", "linux.resources.cpu"))
		}
		if c.Cpus != "" || c.Mems != "" {
			errs = append(errs, need("cpuset", "linux.resources.cpu.cpus/mems"))
			errs = append(errs, withinOnline("linux.resources.cpu.cpus", c.Cpus, "/sys/devices/system/cpu/online"))
			errs = append(errs, withinOnline("linux.resources.cpu.mems", c.Mems, "/sys/devices/system/node/online"))
		}
	}
	if res.Pids != nil {
		errs = append(errs, need("pids", "linux.resources.pids"))
	}
	if _, err := deviceRules(res.Devices); err != nil {
		errs = append(errs, err)
	}
	if b := res.BlockIO; b != nil {
		if b.Weight != nil || b.LeafWeight != nil || len(b.WeightDevice) > 0 || len(b.ThrottleReadBpsDevice) > 0 ||
			len(b.ThrottleWriteBpsDevice) > 0 || len(b.ThrottleReadIOPSDevice) > 0 || len(b.ThrottleWriteIOPSDevice) > 0 {
			ctrl := "blkio"
			if unified() {
				ctrl = "io"
			}
			errs = append(errs, need(ctrl, "linux.resources.blockIO"))
		}
		if (b.Weight != nil || len(b.WeightDevice) > 0) && !unified() && !exists(filepath.Join(mountpoint, "blkio", "blkio.weight")) {
			errs = append(errs, fmt.Errorf("linux.resources.blockIO.weight needs a proportional I/O scheduler (BFQ), which no device here uses: %w", errdefs.ErrFailedPrecondition))
		}
	}
	if len(res.HugepageLimits) > 0 {
		errs = append(errs, need("hugetlb", "linux.resources.hugepageLimits"))
	}
	if res.Network != nil {
		errs = append(errs, fmt.Errorf("linux.resources.network (net_cls/net_prio) is not supported by tupper: %w", errdefs.ErrNotImplemented))
	}
	if len(res.Rdma) > 0 {
		errs = append(errs, need("rdma", "linux.resources.rdma"))
	}
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// hasController reports whether the hierarchy in use offers a controller.
func hasController(name string) bool {
	if unified() {
		b, err := os.ReadFile(filepath.Join(mountpoint, "cgroup.controllers"))
		return err == nil && contains(strings.Fields(string(b)), name)
	}
	// v1: a controller is usable when some hierarchy mounts it.
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.FSType != "cgroup" || !contains(strings.Split(m.VFSOptions, ","), name), false
	})
	return err == nil && len(mounts) > 0
}

func swapAccounting() bool {
	if unified() {
		return exists(filepath.Join(mountpoint, "memory.swap.max")) || hasController("memory")
	}
	return exists(filepath.Join(mountpoint, "memory", "memory.memsw.limit_in_bytes"))
}

// withinOnline checks a cpu or node list ("0-2,4") against the host's online set.
func withinOnline(what, list, onlineFile string) error {
	if list == "" {
		return nil
	}
	want, err := parseList(list)
	if err != nil {
		return fmt.Errorf("%s %q: %v: %w", what, list, err, errdefs.ErrInvalidArgument)
	}
	b, err := os.ReadFile(onlineFile)
	if err != nil {
		return nil // no NUMA information: let the kernel judge
	}
	online, err := parseList(strings.TrimSpace(string(b)))
	if err != nil {
		return nil
	}
	for n := range want {
		if !online[n] {
			return fmt.Errorf("%s %q asks for %d, but this host has only %s online: %w", what, list, n, strings.TrimSpace(string(b)), errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func parseList(s string) (map[int]bool, error) {
	out := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("bad list element %q", part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("bad range %q", part)
			}
		}
		for i := a; i <= b; i++ {
			out[i] = true
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

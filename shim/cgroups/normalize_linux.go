package cgroups

import (
	"fmt"
	"math"
	"path/filepath"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// normalize returns res as runc reads it: a zero in a field where the
// kernel has no use for zero means "unset", not "write 0". Clients rely
// on that: nerdctl sends `cpu: {realtimeRuntime: 0, realtimePeriod: 0}`
// and `memory: {}` with every container, and containerd/cgroups writes
// whatever pointer is set, which the kernel refuses (cpu.rt_period_us,
// cpu.shares, cpu.cfs_period_us) or takes as a real limit of 0
// (memory.limit_in_bytes). The fields and their treatment follow runc's
// cgroup drivers (opencontainers/cgroups fs and fs2), field by field:
//
//   - cpu shares, quota, period, realtime runtime and period; memory limit,
//     reservation and swap; blkio weight and leaf weight (also per
//     device): 0 is unset;
//   - memory swappiness: unset when -1 (as uint64), refused above 100;
//   - disableOOMKiller false: unset (runc writes only true);
//   - a memory limit of -1 (unlimited) with no swap makes swap unlimited
//     too on v1, where the swap limit would otherwise hold the old value.
//
// Pids, burst, idle, cpusets, throttles, hugetlb and device rules keep
// their values: zero is meaningful there (see pidsValue for pids). res
// itself is not changed.
func normalize(res *specs.LinuxResources) (*specs.LinuxResources, error) {
	if res == nil {
		return nil, nil
	}
	out := *res
	if res.CPU != nil {
		c := *res.CPU
		c.Shares = nonZero(c.Shares)
		c.Quota = nonZero(c.Quota)
		c.Period = nonZero(c.Period)
		c.RealtimeRuntime = nonZero(c.RealtimeRuntime)
		c.RealtimePeriod = nonZero(c.RealtimePeriod)
		out.CPU = &c
		if c == (specs.LinuxCPU{}) {
			out.CPU = nil
		}
	}
	if res.Memory != nil {
		m, err := normalizeMemory(*res.Memory)
		if err != nil {
			return nil, err
		}
		out.Memory = m
	}
	if res.BlockIO != nil {
		b := *res.BlockIO
		b.Weight = nonZero(b.Weight)
		b.LeafWeight = nonZero(b.LeafWeight)
		b.WeightDevice = nil
		for _, wd := range res.BlockIO.WeightDevice {
			wd.Weight, wd.LeafWeight = nonZero(wd.Weight), nonZero(wd.LeafWeight)
			if wd.Weight != nil || wd.LeafWeight != nil {
				b.WeightDevice = append(b.WeightDevice, wd)
			}
		}
		out.BlockIO = &b
	}
	return &out, nil
}

func normalizeMemory(m specs.LinuxMemory) (*specs.LinuxMemory, error) {
	m.Limit = nonZero(m.Limit)
	m.Reservation = nonZero(m.Reservation)
	m.Swap = nonZero(m.Swap)
	if m.Swappiness != nil {
		switch v := *m.Swappiness; {
		case v == math.MaxUint64: // -1 in a uint64
			m.Swappiness = nil
		case v > 100:
			return nil, fmt.Errorf("linux.resources.memory.swappiness %d: the valid range is 0 to 100: %w", v, errdefs.ErrInvalidArgument)
		}
	}
	if m.DisableOOMKiller != nil && !*m.DisableOOMKiller {
		m.DisableOOMKiller = nil
	}
	if m.Limit != nil && *m.Limit == -1 && m.Swap == nil && !unified() &&
		exists(filepath.Join(mountpoint, "memory", "memory.memsw.limit_in_bytes")) {
		unlimited := int64(-1)
		m.Swap = &unlimited
	}
	if m == (specs.LinuxMemory{}) {
		return nil, nil
	}
	return &m, nil
}

// forUpdate is what an Update applies of res, as `runc update` does: the
// resources it can change on a running container, with device rules,
// hugetlb, rdma and network left as they are (runc reads none of those
// from an update), and swappiness and the OOM killer switch too.
func forUpdate(res *specs.LinuxResources) (*specs.LinuxResources, error) {
	if res == nil {
		return nil, nil
	}
	u := *res
	u.Devices, u.HugepageLimits, u.Rdma, u.Network = nil, nil, nil, nil
	if res.Memory != nil {
		m := *res.Memory
		m.Swappiness, m.DisableOOMKiller = nil, nil
		u.Memory = &m
	}
	return normalize(&u)
}

// pidsValue is what pids.max gets for a spec's pids limit, as runc writes
// it: the limit when positive, "max" when negative, and "1" for 0 (runc
// maps 0 to 1 so that its cgroupfs and systemd drivers agree; both stop
// any fork). containerd/cgroups writes only positive limits, so a limit
// lifted with -1 or set to 0 would otherwise never reach the kernel.
func pidsValue(res *specs.LinuxResources) (string, bool) {
	if res == nil || res.Pids == nil || res.Pids.Limit == nil || *res.Pids.Limit > 0 {
		return "", false
	}
	if *res.Pids.Limit == 0 {
		return "1", true
	}
	return "max", true
}

func nonZero[T int64 | uint64 | uint16](p *T) *T {
	if p == nil || *p == 0 {
		return nil
	}
	return p
}

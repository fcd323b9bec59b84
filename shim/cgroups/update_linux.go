package cgroups

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Update applies new resources to the running container, all or nothing.
// It takes what `runc update` takes (forUpdate), zeros meaning unset.
// containerd/cgroups writes controller after controller and stops at the
// first file the kernel refuses, which would leave a container with half
// an update (pids and cpuset changed, memory and cpu not) and a caller
// told only that it failed; so the files an update touches are read
// first and, when a write fails, put back as they were. The error then
// says that nothing changed, or names the files that could not be put
// back.
func (m *Manager) Update(ctx context.Context, res *specs.LinuxResources) error {
	res, err := forUpdate(res)
	if err != nil {
		return err
	}
	if err := Check(res); err != nil {
		return err
	}
	res = withoutKernelMemory(ctx, res)
	if res == nil {
		return nil
	}
	saved := m.save(res)
	err = m.apply(ctx, res)
	if err == nil {
		return nil
	}
	if left := saved.restore(); len(left) > 0 {
		return fmt.Errorf("%w; putting the previous values back failed for %s, which may hold the new values", err, strings.Join(left, ", "))
	}
	return fmt.Errorf("%w (nothing changed: the values written before the failure were put back)", err)
}

// apply writes res through containerd/cgroups, plus what it leaves out.
func (m *Manager) apply(ctx context.Context, res *specs.LinuxResources) error {
	if m.v2 != nil {
		r := cgroup2.ToResources(res)
		if m.unit != "" {
			// The scope's properties, or systemd would write the
			// old limits back on its next daemon-reload.
			if err := setScopeProperties(ctx, m.unit, r); err != nil {
				return err
			}
		}
		if err := m.v2.Update(r); err != nil {
			return err
		}
	} else {
		if err := m.raiseSwapFirst(res); err != nil {
			return err
		}
		if err := m.v1.Update(res); err != nil {
			return err
		}
	}
	if v, ok := pidsValue(res); ok {
		return writeFile(m.file("pids", "pids.max"), v)
	}
	return nil
}

// raiseSwapFirst writes the v1 memory+swap limit before the memory limit
// when the new swap limit is above the current memory limit, as runc
// does: the kernel keeps memsw >= memory at every step, and containerd/
// cgroups writes the memory limit first, so raising both at once would
// fail halfway (memory.limit_in_bytes: invalid argument).
func (m *Manager) raiseSwapFirst(res *specs.LinuxResources) error {
	if res.Memory == nil || res.Memory.Limit == nil || res.Memory.Swap == nil {
		return nil
	}
	cur, err := os.ReadFile(m.file("memory", "memory.limit_in_bytes"))
	if err != nil {
		return err
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(cur)), 10, 64)
	if err != nil {
		return err
	}
	if swap := *res.Memory.Swap; swap == -1 || limit < swap {
		return writeFile(m.file("memory", "memory.memsw.limit_in_bytes"), strconv.FormatInt(swap, 10))
	}
	return nil
}

// file is a cgroup file of the container: v1 controller's hierarchy, or
// the v2 directory.
func (m *Manager) file(v1controller, name string) string {
	if m.v2 != nil {
		return filepath.Join(mountpoint, m.path, name)
	}
	return filepath.Join(mountpoint, v1controller, m.path, name)
}

// touched lists the files an update of res writes (v1 controller, v1
// name, v2 name; "" where a version has none). Device-keyed blkio/io
// limits are listed by throttleFiles.
func touched(res *specs.LinuxResources) [][3]string {
	var out [][3]string
	add := func(set bool, ctrl, v1, v2 string) {
		if set {
			out = append(out, [3]string{ctrl, v1, v2})
		}
	}
	if c := res.CPU; c != nil {
		add(c.Shares != nil, "cpu", "cpu.shares", "cpu.weight")
		add(c.Period != nil, "cpu", "cpu.cfs_period_us", "cpu.max")
		add(c.Quota != nil, "cpu", "cpu.cfs_quota_us", "cpu.max")
		add(c.RealtimePeriod != nil, "cpu", "cpu.rt_period_us", "")
		add(c.RealtimeRuntime != nil, "cpu", "cpu.rt_runtime_us", "")
		add(c.Cpus != "", "cpuset", "cpuset.cpus", "cpuset.cpus")
		add(c.Mems != "", "cpuset", "cpuset.mems", "cpuset.mems")
	}
	if mem := res.Memory; mem != nil {
		add(mem.Limit != nil, "memory", "memory.limit_in_bytes", "memory.max")
		add(mem.Reservation != nil, "memory", "memory.soft_limit_in_bytes", "memory.low")
		add(mem.Swap != nil, "memory", "memory.memsw.limit_in_bytes", "memory.swap.max")
	}
	add(res.Pids != nil && res.Pids.Limit != nil, "pids", "pids.max", "pids.max")
	if b := res.BlockIO; b != nil {
		add(b.Weight != nil, "blkio", "blkio.weight", "io.bfq.weight")
		add(b.LeafWeight != nil, "blkio", "blkio.leaf_weight", "")
	}
	for k := range res.Unified {
		add(true, "", "", k)
	}
	return out
}

// saved holds the content of files before an update.
type saved struct {
	files map[string]string   // path → content
	keyed map[string][]string // device-keyed file → "major:minor" keys the update writes
}

// save reads every file an update of res may write.
func (m *Manager) save(res *specs.LinuxResources) saved {
	s := saved{files: map[string]string{}, keyed: map[string][]string{}}
	for _, f := range touched(res) {
		name := f[1]
		if m.v2 != nil {
			name = f[2]
		}
		if name == "" {
			continue
		}
		p := m.file(f[0], name)
		if b, err := os.ReadFile(p); err == nil {
			s.files[p] = strings.TrimSpace(string(b))
		}
	}
	if m.v2 == nil {
		for name, keys := range throttleFiles(res) {
			p := m.file("blkio", name)
			if b, err := os.ReadFile(p); err == nil {
				s.files[p] = string(b)
				s.keyed[p] = keys
			}
		}
	}
	return s
}

// throttleFiles maps each v1 blkio throttle file an update writes to the
// devices it writes there.
func throttleFiles(res *specs.LinuxResources) map[string][]string {
	out := map[string][]string{}
	if res.BlockIO == nil {
		return out
	}
	for name, devs := range map[string][]specs.LinuxThrottleDevice{
		"blkio.throttle.read_bps_device":   res.BlockIO.ThrottleReadBpsDevice,
		"blkio.throttle.write_bps_device":  res.BlockIO.ThrottleWriteBpsDevice,
		"blkio.throttle.read_iops_device":  res.BlockIO.ThrottleReadIOPSDevice,
		"blkio.throttle.write_iops_device": res.BlockIO.ThrottleWriteIOPSDevice,
	} {
		for _, d := range devs {
			out[name] = append(out[name], fmt.Sprintf("%d:%d", d.Major, d.Minor))
		}
	}
	return out
}

// restore writes back every saved file whose content changed, in passes,
// since the kernel orders some pairs (memory under memsw, rt runtime
// under rt period): a value refused in one pass may go in the next. It
// returns the files it could not restore.
func (s saved) restore() []string {
	pending := map[string]bool{}
	for p := range s.files {
		pending[p] = true
	}
	for pass := 0; pass < 3 && len(pending) > 0; pass++ {
		for p := range pending {
			if s.restoreFile(p) == nil {
				delete(pending, p)
			}
		}
	}
	var left []string
	for p := range pending {
		left = append(left, p)
	}
	return left
}

func (s saved) restoreFile(p string) error {
	old := s.files[p]
	if keys, ok := s.keyed[p]; ok {
		return restoreKeyed(p, old, keys)
	}
	cur, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(cur)) == old {
		return nil
	}
	return writeFile(p, old)
}

// restoreKeyed puts back a blkio throttle file: each device the update
// wrote gets its old limit, or 0 (no limit) if it had none.
func restoreKeyed(p, old string, keys []string) error {
	prev := map[string]string{}
	for _, line := range strings.Split(old, "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			prev[f[0]] = f[1]
		}
	}
	var errs []error
	for _, k := range keys {
		v, ok := prev[k]
		if !ok {
			v = "0"
		}
		errs = append(errs, writeFile(p, k+" "+v))
	}
	return errors.Join(errs...)
}

func writeFile(p, v string) error {
	if err := os.WriteFile(p, []byte(v), 0); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

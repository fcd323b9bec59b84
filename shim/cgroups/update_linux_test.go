package cgroups

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// zeros is every resource field set to zero, as nerdctl sends some of
// them with every container (cpu realtime, an empty memory): runc takes
// each as unset.
func zeros() *specs.LinuxResources {
	return &specs.LinuxResources{
		CPU: &specs.LinuxCPU{Shares: ptr(uint64(0)), Quota: ptr(int64(0)), Period: ptr(uint64(0)),
			RealtimeRuntime: ptr(int64(0)), RealtimePeriod: ptr(uint64(0))},
		Memory: &specs.LinuxMemory{Limit: ptr(int64(0)), Reservation: ptr(int64(0)), Swap: ptr(int64(0)),
			DisableOOMKiller: ptr(false), Swappiness: ptr(uint64(math.MaxUint64))},
		BlockIO: &specs.LinuxBlockIO{Weight: ptr(uint16(0)), LeafWeight: ptr(uint16(0))},
	}
}

// v1Files are the v1 files zeros would write; the test compares them
// before and after.
var v1Files = [][2]string{
	{"cpu", "cpu.shares"}, {"cpu", "cpu.cfs_quota_us"}, {"cpu", "cpu.cfs_period_us"},
	{"cpu", "cpu.rt_runtime_us"}, {"cpu", "cpu.rt_period_us"},
	{"memory", "memory.limit_in_bytes"}, {"memory", "memory.soft_limit_in_bytes"},
	{"memory", "memory.memsw.limit_in_bytes"}, {"memory", "memory.swappiness"},
}

func readV1(t *testing.T, m *Manager) map[string]string {
	out := map[string]string{}
	if unified() {
		return out
	}
	for _, f := range v1Files {
		out[f[1]] = controllerFile(t, m, f[0], f[1])
	}
	return out
}

func TestZeroResourcesAreUnset(t *testing.T) {
	ctx := context.Background()
	plain, err := New(ctx, testPath(t), &specs.LinuxResources{}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defaults := readV1(t, plain)
	// Before normalize: write .../cpu.rt_period_us: invalid argument.
	m, err := New(ctx, testPath(t), zeros(), false, 0)
	if err != nil {
		t.Fatalf("New with zero resources: %v", err)
	}
	if got := readV1(t, m); !equalMaps(got, defaults) {
		t.Errorf("zero resources changed the cgroup:\n got %v\nwant %v", got, defaults)
	}
	if err := m.Update(ctx, zeros()); err != nil {
		t.Fatalf("Update with zero resources: %v", err)
	}
	if got := readV1(t, m); !equalMaps(got, defaults) {
		t.Errorf("an update of zeros changed the cgroup:\n got %v\nwant %v", got, defaults)
	}
	bad := &specs.LinuxResources{Memory: &specs.LinuxMemory{Swappiness: ptr(uint64(101))}}
	if _, err := New(ctx, testPath(t), bad, false, 0); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "swappiness") {
		t.Errorf("New with swappiness 101: %v, want an invalid-argument error naming swappiness", err)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestUpdateAllOrNothing: a write the kernel refuses (a cfs period below
// its 1 ms minimum) comes after containerd/cgroups has written pids and
// cpuset; the update must leave nothing of itself behind and say so.
func TestUpdateAllOrNothing(t *testing.T) {
	ctx := context.Background()
	m, err := New(ctx, testPath(t), &specs.LinuxResources{
		Pids:   &specs.LinuxPids{Limit: ptr(int64(100))},
		Memory: &specs.LinuxMemory{Limit: ptr(int64(64 << 20))},
	}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]string{
		"pids.max": controllerFile(t, m, "pids", "pids.max"), "cpuset.cpus": controllerFile(t, m, "cpuset", "cpuset.cpus"),
	}
	err = m.Update(ctx, &specs.LinuxResources{
		Pids:   &specs.LinuxPids{Limit: ptr(int64(50))},
		CPU:    &specs.LinuxCPU{Cpus: "0", Period: ptr(uint64(100)), Quota: ptr(int64(50))},
		Memory: &specs.LinuxMemory{Limit: ptr(int64(32 << 20))},
	})
	if err == nil || !strings.Contains(err.Error(), "nothing changed") {
		t.Fatalf("Update with a refused period: %v, want an error saying nothing changed", err)
	}
	after := map[string]string{
		"pids.max": controllerFile(t, m, "pids", "pids.max"), "cpuset.cpus": controllerFile(t, m, "cpuset", "cpuset.cpus"),
	}
	if !equalMaps(before, after) {
		t.Errorf("a failed update left changes: before %v, after %v", before, after)
	}
	if !unified() {
		if got := controllerFile(t, m, "memory", "memory.limit_in_bytes"); got != strconv.Itoa(64<<20) {
			t.Errorf("memory.limit_in_bytes = %s after a failed update, want %d", got, 64<<20)
		}
	}
}

// TestUpdatePidsAsRunc: -1 lifts a pids limit and 0 is a limit (runc
// writes 1), where containerd/cgroups writes only positive limits.
func TestUpdatePidsAsRunc(t *testing.T) {
	ctx := context.Background()
	m, err := New(ctx, testPath(t), &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr(int64(10))}}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		limit int64
		want  string
	}{{-1, "max"}, {20, "20"}, {0, "1"}} {
		if err := m.Update(ctx, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr(c.limit)}}); err != nil {
			t.Fatalf("Update pids %d: %v", c.limit, err)
		}
		if got := controllerFile(t, m, "pids", "pids.max"); got != c.want {
			t.Errorf("pids limit %d: pids.max = %s, want %s", c.limit, got, c.want)
		}
	}
}

// TestUpdateRaisesMemoryAndSwap: raising memory and memory+swap together
// above the old swap limit works (the kernel wants memsw >= memory at
// every step; containerd/cgroups writes memory first).
func TestUpdateRaisesMemoryAndSwap(t *testing.T) {
	if unified() || !exists(mountpoint+"/memory/memory.memsw.limit_in_bytes") {
		t.Skip("v1 swap accounting only: the v2 swap limit is separate from memory.max")
	}
	ctx := context.Background()
	m, err := New(ctx, testPath(t), &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr(int64(64 << 20)), Swap: ptr(int64(128 << 20))}}, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = m.Update(ctx, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(256 << 20)), Swap: ptr(int64(512 << 20))}})
	if err != nil {
		t.Fatalf("raising memory and swap: %v", err)
	}
	if got := controllerFile(t, m, "memory", "memory.memsw.limit_in_bytes"); got != strconv.Itoa(512<<20) {
		t.Errorf("memsw = %s", got)
	}
	// And unlimited memory with no swap makes swap unlimited too (runc).
	if err := m.Update(ctx, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(-1))}}); err != nil {
		t.Fatal(err)
	}
	if lim, sw := controllerFile(t, m, "memory", "memory.limit_in_bytes"), controllerFile(t, m, "memory", "memory.memsw.limit_in_bytes"); lim != sw {
		t.Errorf("after memory -1: limit %s, memsw %s; want both unlimited", lim, sw)
	}
}

func TestForUpdateKeepsWhatRuncUpdateIgnores(t *testing.T) {
	res, err := forUpdate(&specs.LinuxResources{
		Devices:        []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 0}},
		Memory:         &specs.LinuxMemory{Swappiness: ptr(uint64(10)), DisableOOMKiller: ptr(true)},
		Pids:           &specs.LinuxPids{Limit: ptr(int64(5))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Devices != nil || res.HugepageLimits != nil || res.Memory != nil || res.Pids == nil {
		t.Errorf("forUpdate = %+v: want only pids", res)
	}
	// runc update does not read swappiness, so not even a bad one fails it.
	if res, err := forUpdate(&specs.LinuxResources{Memory: &specs.LinuxMemory{Swappiness: ptr(uint64(200))}}); err != nil || res.Memory != nil {
		t.Errorf("update with swappiness 200: %+v, %v; want it ignored", res, err)
	}
	if _, err := normalize(&specs.LinuxResources{Memory: &specs.LinuxMemory{Swappiness: ptr(uint64(200))}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("create with swappiness 200: %v, want invalid argument", err)
	}
}

package main

import (
	"fmt"

	containerd "github.com/containerd/containerd/v2/client"
)

// The floor under the start rows: the same `ctr run` and task API runs
// through hack/noopshim, a shim with tupper's plumbing that runs nothing,
// on overlayfs. What ctr and containerd spend on a container is in every
// runtime's row; these rows show how much that is, and each runtime's own
// part above it, so that a ratio target on the whole row can be read.

const noopName = "no-op runtime"

// noopStack is hack/noopshim on overlayfs; ok is false when the bench has
// no such shim.
func (b *bench) noopStack() (s stack, ok bool) {
	if b.shim.noopShim == "" {
		return stack{}, false
	}
	return stack{
		name: noopName, runtime: b.shim.noopShim, snapshotter: "overlayfs",
		ctrArgs: []string{"--runtime", b.shim.noopShim, "--snapshotter", "overlayfs"},
	}, true
}

// floorRows are the no-op runtime's samples, in round order, and what
// startLatency derives from them once its rounds are done.
type floorRows struct {
	ctr, api []float64
}

// round runs the no-op runtime once through ctr and once through the
// task API, as startLatency runs every other stack.
func (f *floorRows) round(b *bench, s stack, img containerd.Image) error {
	d, err := b.ctrRun(s, img.Name())
	if err != nil {
		return err
	}
	t, err := b.taskRun(s, img)
	if err != nil {
		return err
	}
	f.ctr = append(f.ctr, ms(d))
	f.api = append(f.api, ms(t[len(t)-1].Sub(t[0])))
	return nil
}

// results compares the no-op runtime with baseline in the ctr and task
// API rows, and gives each runtime's time above it, round by round, for
// tupper's like-for-like (NetworkMode=none) row against baseline's.
func (f *floorRows) results(rs *startRows, baseline string) ([]*Result, error) {
	var floors, owns []*Result
	for _, row := range []struct {
		what string
		noop []float64
		full *Result
	}{
		{"ctr run --rm true", f.ctr, rs.ctrNone},
		{"task API", f.api, rs.apiNone},
	} {
		base, tup := row.full.Samples[baseline], row.full.Samples["tupper"]
		if len(base) != len(row.noop) || len(tup) != len(row.noop) {
			return nil, fmt.Errorf("%s: %d no-op samples, %d of tupper, %d of %s", row.what, len(row.noop), len(tup), len(base), baseline)
		}
		floor := newResult("start latency floor", row.what+", a runtime that runs nothing", "ms", []string{noopName, baseline})
		floor.Note = "hack/noopshim on overlayfs: tupper's shim plumbing (`start`, the ttrpc daemon, `shim delete`'s fast path) with a task that exits as soon as it is started, and no process, namespace, mount or cgroup. " +
			"What ctr and containerd spend on every container whatever the runtime; no runtime's row can be below it"
		floor.Samples[noopName], floor.Samples[baseline] = row.noop, base
		own := newResult("start latency floor", row.what+", the runtime's own part (its time above the no-op runtime's in the same round), tupper NetworkMode=none", "ms", []string{"tupper", baseline})
		own.Note = "each round's sample minus the no-op runtime's sample of that round"
		for i := range row.noop {
			own.add("tupper", tup[i]-row.noop[i])
			own.add(baseline, base[i]-row.noop[i])
		}
		floors, owns = append(floors, floor), append(owns, own)
	}
	return append(floors, owns...), nil
}

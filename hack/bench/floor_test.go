package main

import (
	"slices"
	"testing"
)

// TestFloorResults: the floor rows hold the no-op runtime's samples against
// the baseline's, and each runtime's own part is its sample less the no-op
// runtime's of the same round, not a difference of medians.
func TestFloorResults(t *testing.T) {
	const base = "runc+overlayfs"
	rs := newStartRows([]string{"tupper", base}, base)
	for _, v := range []float64{90, 150, 95} {
		rs.ctrNone.add("tupper", v)
	}
	for _, v := range []float64{170, 230, 160} {
		rs.ctrNone.add(base, v)
	}
	for _, v := range []float64{50, 52, 58} {
		rs.apiNone.add("tupper", v)
	}
	for _, v := range []float64{120, 125, 130} {
		rs.apiNone.add(base, v)
	}
	// Round 2 ran on a busy machine: every subject slowed down.
	f := floorRows{ctr: []float64{70, 130, 72}, api: []float64{30, 31, 35}}
	res, err := f.results(rs, base)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 4 {
		t.Fatalf("%d results, want the two floors and the two own parts", len(res))
	}
	ctrFloor, ctrOwn, apiOwn := res[0], res[2], res[3]
	if !slices.Equal(ctrFloor.Subjects, []string{noopName, base}) || !slices.Equal(ctrFloor.Samples[noopName], f.ctr) {
		t.Errorf("ctr floor: subjects %v, samples %v", ctrFloor.Subjects, ctrFloor.Samples)
	}
	// Per round 70/170, 130/230, 72/160: the median is round 3's.
	if r, ok := ctrFloor.Ratio(base); !ok || r != 72.0/160 {
		t.Errorf("ctr floor ratio %v (%v), want the paired median 72/160", r, ok)
	}
	for _, c := range []struct {
		r          *Result
		tup, basev []float64
	}{
		{ctrOwn, []float64{20, 20, 23}, []float64{100, 100, 88}},
		{apiOwn, []float64{20, 21, 23}, []float64{90, 94, 95}},
	} {
		if !slices.Equal(c.r.Samples["tupper"], c.tup) || !slices.Equal(c.r.Samples[base], c.basev) {
			t.Errorf("%s: samples %v, want tupper %v and %s %v", c.r.Metric, c.r.Samples, c.tup, base, c.basev)
		}
	}
	f.api = f.api[:2]
	if _, err := f.results(rs, base); err == nil {
		t.Error("a no-op runtime with fewer rounds than the others gave results")
	}
}

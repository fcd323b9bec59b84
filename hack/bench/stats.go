package main

import (
	"fmt"
	"sort"
)

// Result is one row of the table: one metric, measured for every subject
// (tupper first, then the baselines) in paired interleaved runs, so that
// sample i of every subject comes from the same round.
type Result struct {
	Metric   string   `json:"metric"`
	Group    string   `json:"group"`
	Unit     string   `json:"unit"`
	Note     string   `json:"note,omitempty"`
	Subjects []string `json:"subjects"`
	// Samples by subject, in round order.
	Samples map[string][]float64 `json:"samples"`
	// Target, when the issue sets one for this metric.
	Target *Target `json:"target,omitempty"`
}

// Target is "tupper/Baseline <= MaxRatio" on the median paired ratio or,
// without a Baseline, "tupper's median <= Max" in the row's unit.
type Target struct {
	Baseline string  `json:"baseline,omitempty"`
	MaxRatio float64 `json:"max_ratio,omitempty"`
	Max      float64 `json:"max,omitempty"`
	Text     string  `json:"text"`
}

func newResult(group, metric, unit string, subjects []string) *Result {
	return &Result{Group: group, Metric: metric, Unit: unit, Subjects: subjects, Samples: map[string][]float64{}}
}

func (r *Result) add(subject string, v float64) {
	r.Samples[subject] = append(r.Samples[subject], v)
}

// Median of the subject's samples (NaN-free; 0 when there are none).
func (r *Result) Median(subject string) float64 { return median(r.Samples[subject]) }

// Ratio is the median over rounds of tupper's sample divided by the
// baseline's sample of the same round: the paired ratio, which a machine
// that gets busier or quieter during the run shifts much less than a
// ratio of medians.
func (r *Result) Ratio(baseline string) (float64, bool) {
	return pairedRatio(r.Samples[r.Subjects[0]], r.Samples[baseline])
}

// Met says whether the target holds, and whether there is one.
func (r *Result) Met() (met, ok bool) {
	if r.Target == nil {
		return false, false
	}
	if r.Target.Baseline == "" {
		if len(r.Samples[r.Subjects[0]]) == 0 {
			return false, false
		}
		return r.Median(r.Subjects[0]) <= r.Target.Max, true
	}
	ratio, ok := r.Ratio(r.Target.Baseline)
	if !ok {
		return false, false
	}
	return ratio <= r.Target.MaxRatio, true
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// pairedRatio is the median of a[i]/b[i] over the pairs both have, with
// b[i] > 0. ok is false when there is no such pair.
func pairedRatio(a, b []float64) (float64, bool) {
	n := min(len(a), len(b))
	var rs []float64
	for i := 0; i < n; i++ {
		if b[i] > 0 {
			rs = append(rs, a[i]/b[i])
		}
	}
	if len(rs) == 0 {
		return 0, false
	}
	return median(rs), true
}

// interleave runs f for rounds 0..rounds-1 and, within each round, for
// every subject once. The order within a round rotates (round 0: A B C,
// round 1: B C A, ...) so no subject always runs first, right after
// another's writeback, or last.
func interleave(rounds int, subjects []string, f func(round int, subject string) error) error {
	for r := 0; r < rounds; r++ {
		for i := range subjects {
			s := subjects[(r+i)%len(subjects)]
			if err := f(r, s); err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, s, err)
			}
		}
	}
	return nil
}

// human formats a value of unit u with 3 significant digits.
func human(v float64, unit string) string {
	switch {
	case v == 0:
		return "0 " + unit
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	case v >= 1:
		return fmt.Sprintf("%.2f %s", v, unit)
	default:
		return fmt.Sprintf("%.3g %s", v, unit)
	}
}

// ratioText formats a paired ratio as "0.42×", or "1/57" for small ones
// (easier to read as "57× faster").
func ratioText(r float64) string {
	switch {
	case r <= 0:
		return "–"
	case r < 0.1:
		return fmt.Sprintf("%.2g× (1/%.0f)", r, 1/r)
	default:
		return fmt.Sprintf("%.2f×", r)
	}
}

// thousands formats n with commas: 20000 -> "20,000".
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

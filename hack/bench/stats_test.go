package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := append([]float64(nil), c.in...)
		if got := median(in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		for i := range in {
			if in[i] != c.in[i] {
				t.Errorf("median reordered its input: %v", in)
			}
		}
	}
}

func TestPairedRatio(t *testing.T) {
	// Rounds 1 and 3 ran on a busy machine: both subjects slowed down.
	tupper := []float64{1, 20, 2, 40}
	base := []float64{10, 200, 20, 400}
	if r, ok := pairedRatio(tupper, base); !ok || math.Abs(r-0.1) > 1e-12 {
		t.Errorf("pairedRatio = %v, %v; want 0.1, true", r, ok)
	}
	if _, ok := pairedRatio([]float64{1}, []float64{0}); ok {
		t.Error("pairedRatio with a zero baseline: ok, want not ok")
	}
	// Unequal lengths: only whole pairs count.
	if r, ok := pairedRatio([]float64{2, 4, 100}, []float64{1, 2}); !ok || r != 2 {
		t.Errorf("pairedRatio(unequal) = %v, %v; want 2, true", r, ok)
	}
}

func TestInterleaveRotates(t *testing.T) {
	var got []string
	err := interleave(3, []string{"a", "b", "c"}, func(round int, s string) error {
		got = append(got, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "a b c b c a c a b"; strings.Join(got, " ") != want {
		t.Errorf("order %q, want %q", strings.Join(got, " "), want)
	}
	boom := errors.New("boom")
	err = interleave(2, []string{"a", "b"}, func(round int, s string) error {
		if round == 1 && s == "a" {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "round 2, a") {
		t.Errorf("error %v, want boom in round 2, a", err)
	}
}

func testReport() *Report {
	subjects := []string{"tupper", "btrfs", "overlay<&>"}
	r := newResult("usage", `Usage "20,000" files`, "ms", subjects)
	r.Target = &Target{Baseline: "btrfs", MaxRatio: 0.02, Text: "≥ 50× faster"}
	for i := 0; i < 3; i++ {
		r.add("tupper", 0.2)
		r.add("btrfs", 150)
		r.add("overlay<&>", 90)
	}
	z := newResult("ops", "Zero", "ms", subjects)
	for _, s := range subjects {
		z.add(s, 0)
	}
	return &Report{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Runs:    3,
		Machine: map[string]string{"cpu": "Some <CPU> & co"},
		Results: []*Result{r, z},
	}
}

func TestSVGWellFormed(t *testing.T) {
	svg := testReport().SVG()
	d := xml.NewDecoder(bytes.NewReader(svg))
	var rects, texts int
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			switch se.Name.Local {
			case "rect":
				rects++
			case "text":
				texts++
			}
		}
	}
	// Background plus one bar per subject and metric.
	if rects != 1+2*3 {
		t.Errorf("%d rects, want 7", rects)
	}
	if !bytes.Contains(svg, []byte("target met")) {
		t.Error("SVG does not say the target was met")
	}
}

func TestTableAndTarget(t *testing.T) {
	rep := testReport()
	if met, ok := rep.Results[0].Met(); !ok || !met {
		t.Errorf("Met() = %v, %v; want true, true", met, ok)
	}
	tab := rep.Table()
	for _, want := range []string{"| tupper/btrfs |", "0.2 ms", "150 ms", "(1/750)", "met |"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	if _, err := rep.JSON(); err != nil {
		t.Fatal(err)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 20000: "20,000", 1234567: "1,234,567", -5000: "-5,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestAbsoluteTarget(t *testing.T) {
	r := newResult("shim memory", "RSS", "MiB", []string{"tupper", "runc"})
	r.Target = &Target{Max: 6, Text: "tupper ≤ 6 MiB RSS"}
	if _, ok := r.Met(); ok {
		t.Error("Met() without samples says it knows")
	}
	for _, v := range []float64{5, 7, 5.5} {
		r.add("tupper", v)
		r.add("runc", 10)
	}
	if met, ok := r.Met(); !ok || !met {
		t.Errorf("median 5.5 against ≤ 6: Met() = %v, %v; want true, true", met, ok)
	}
	r.add("tupper", 8)
	r.add("tupper", 9)
	if met, ok := r.Met(); !ok || met {
		t.Errorf("median 7 against ≤ 6: Met() = %v, %v; want false, true", met, ok)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Report is everything one run of the driver measured, and where.
type Report struct {
	Started  time.Time         `json:"started"`
	Duration string            `json:"duration"`
	Machine  map[string]string `json:"machine"`
	Versions map[string]string `json:"versions"`
	// Storage says where each subject keeps its data.
	Storage map[string]string `json:"storage"`
	Runs    int               `json:"runs"`
	Notes   []string          `json:"notes"`
	Results []*Result         `json:"results"`
}

// keys in a fixed order for the header.
var (
	machineKeys = []string{"kernel", "cpu", "cores", "memory", "load before", "load after"}
	versionKeys = []string{"containerd", "runc", "runc shim", "go", "tupper"}
)

func (rep *Report) header(w *bytes.Buffer) {
	fmt.Fprintf(w, "# tupper benchmarks (`make bench`)\n\n")
	fmt.Fprintf(w, "Run %s, took %s.\n\n", rep.Started.UTC().Format("2006-01-02 15:04 UTC"), rep.Duration)
	fmt.Fprintf(w, "- **Machine:** ")
	var parts []string
	for _, k := range machineKeys {
		if v := rep.Machine[k]; v != "" {
			parts = append(parts, k+" "+v)
		}
	}
	fmt.Fprintf(w, "%s\n", strings.Join(parts, "; "))
	parts = parts[:0]
	for _, k := range versionKeys {
		if v := rep.Versions[k]; v != "" {
			parts = append(parts, k+" "+v)
		}
	}
	fmt.Fprintf(w, "- **Versions:** %s\n", strings.Join(parts, "; "))
	parts = parts[:0]
	for _, s := range subjectsOf(rep) {
		if v := rep.Storage[s]; v != "" {
			parts = append(parts, s+" on "+v)
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "- **Storage:** %s\n", strings.Join(parts, "; "))
	}
	fmt.Fprintf(w, "- **Method:** every figure is the median of paired interleaved runs: in each round every subject runs once, "+
		"back to back, in an order that rotates from round to round; n is the number of rounds. "+
		"The ratio is tupper/baseline, the median over rounds of the two samples of the same round (below 1: tupper is faster or smaller; for containers per second, above 1). "+
		"BENCH_RUNS=%d.\n", rep.Runs)
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	fmt.Fprintln(w)
}

// subjectsOf lists every subject of the report, in first-seen order.
func subjectsOf(rep *Report) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rep.Results {
		for _, s := range r.Subjects {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

// Markdown is the header and one table per group of results.
func (rep *Report) Markdown(svgName string) string {
	var w bytes.Buffer
	rep.header(&w)
	if svgName != "" {
		fmt.Fprintf(&w, "![chart](%s)\n\n", svgName)
	}
	w.WriteString(rep.Table())
	var notes []string
	for _, r := range rep.Results {
		if r.Note != "" {
			notes = append(notes, fmt.Sprintf("- **%s / %s:** %s", r.Group, r.Metric, r.Note))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(&w, "\n%s\n", strings.Join(notes, "\n"))
	}
	return w.String()
}

// Table is the results as Markdown tables, one per group; also printed to
// stdout.
func (rep *Report) Table() string {
	var w bytes.Buffer
	var group string
	var subjects []string
	for _, r := range rep.Results {
		if r.Group != group || strings.Join(r.Subjects, ",") != strings.Join(subjects, ",") {
			group, subjects = r.Group, r.Subjects
			fmt.Fprintf(&w, "\n### %s\n\n| metric | n |", group)
			for _, s := range subjects {
				fmt.Fprintf(&w, " %s |", s)
			}
			for _, s := range subjects[1:] {
				fmt.Fprintf(&w, " %s/%s |", subjects[0], s)
			}
			fmt.Fprintf(&w, " target |\n|---|--:|")
			for range subjects {
				w.WriteString("--:|")
			}
			for range subjects[1:] {
				w.WriteString("--:|")
			}
			w.WriteString("---|\n")
		}
		fmt.Fprintf(&w, "| %s | %d |", r.Metric, len(r.Samples[subjects[0]]))
		for _, s := range subjects {
			fmt.Fprintf(&w, " %s |", human(r.Median(s), r.Unit))
		}
		for _, s := range subjects[1:] {
			if ratio, ok := r.Ratio(s); ok {
				fmt.Fprintf(&w, " %s |", ratioText(ratio))
			} else {
				w.WriteString(" – |")
			}
		}
		if met, ok := r.Met(); ok {
			verdict := "**missed**"
			if met {
				verdict = "met"
			}
			fmt.Fprintf(&w, " %s: %s |\n", r.Target.Text, verdict)
		} else {
			w.WriteString(" |\n")
		}
	}
	return w.String()
}

// JSON is the report with every sample.
func (rep *Report) JSON() ([]byte, error) {
	type summary struct {
		Metric  string             `json:"metric"`
		Medians map[string]float64 `json:"medians"`
		Ratios  map[string]float64 `json:"ratios"`
		Met     *bool              `json:"target_met,omitempty"`
	}
	var sums []summary
	for _, r := range rep.Results {
		s := summary{Metric: r.Group + "/" + r.Metric, Medians: map[string]float64{}, Ratios: map[string]float64{}}
		for _, sub := range r.Subjects {
			s.Medians[sub] = r.Median(sub)
		}
		for _, sub := range r.Subjects[1:] {
			if ratio, ok := r.Ratio(sub); ok {
				s.Ratios[r.Subjects[0]+"/"+sub] = ratio
			}
		}
		if met, ok := r.Met(); ok {
			s.Met = &met
		}
		sums = append(sums, s)
	}
	return json.MarshalIndent(struct {
		*Report
		Summary []summary `json:"summary"`
	}{rep, sums}, "", "  ")
}

// subject colours in the chart: tupper first.
var palette = []string{"#e8772e", "#3b73b9", "#8c8c8c", "#5aa469", "#a05195"}

// SVG draws one block per metric: a horizontal bar per subject, scaled to
// the largest median of that metric (metrics differ by orders of
// magnitude), labelled with the median and, for baselines, the ratio.
func (rep *Report) SVG() []byte {
	const (
		width    = 900
		left     = 100 // subject names to the left of this
		barMax   = 460
		barH     = 16
		gap      = 4
		blockGap = 16
		top      = 56
	)
	var body bytes.Buffer
	y := top
	for _, r := range rep.Results {
		maxV := 0.0
		for _, s := range r.Subjects {
			maxV = math.Max(maxV, r.Median(s))
		}
		title := r.Group + ": " + r.Metric + " (median, " + r.Unit + ")"
		if r.Unit == "/s" {
			title += ", longer is better"
		}
		if met, ok := r.Met(); ok {
			if met {
				title += " — target met"
			} else {
				title += " — target missed"
			}
		}
		fmt.Fprintf(&body, `<text x="10" y="%d" font-weight="bold">%s</text>`+"\n", y+12, esc(title))
		y += 18
		for i, s := range r.Subjects {
			v := r.Median(s)
			w := 0.0
			if maxV > 0 {
				w = v / maxV * barMax
			}
			if v > 0 && w < 1 {
				w = 1
			}
			label := human(v, r.Unit)
			if i > 0 {
				if ratio, ok := r.Ratio(s); ok {
					label += " · tupper/" + s + " " + ratioText(ratio)
				}
			}
			fmt.Fprintf(&body, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+12, esc(s))
			fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, w, barH, palette[i%len(palette)])
			fmt.Fprintf(&body, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(left)+w+6, y+12, esc(label))
			y += barH + gap
		}
		y += blockGap
	}
	height := y + 10
	var out bytes.Buffer
	fmt.Fprintf(&out, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&out, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&out, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&out, `<text x="10" y="22" font-size="16" font-weight="bold">%s</text>`+"\n",
		esc("tupper vs containerd's snapshotters and runc — shorter is better"))
	fmt.Fprintf(&out, `<text x="10" y="40" fill="#555">%s</text>`+"\n",
		esc(fmt.Sprintf("%s · medians of paired interleaved runs (BENCH_RUNS=%d) · %s", rep.Started.UTC().Format("2006-01-02 15:04 UTC"), rep.Runs, rep.Machine["cpu"])))
	out.Write(body.Bytes())
	out.WriteString("</svg>\n")
	return out.Bytes()
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// write puts results.{md,json,svg} into dir and, when latest is set,
// latest.{md,svg} into that directory.
func (rep *Report) write(dir, latest string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := rep.JSON()
	if err != nil {
		return err
	}
	svg := rep.SVG()
	files := map[string][]byte{
		filepath.Join(dir, "results.md"):   []byte(rep.Markdown("results.svg")),
		filepath.Join(dir, "results.json"): append(js, '\n'),
		filepath.Join(dir, "results.svg"):  svg,
	}
	if latest != "" {
		files[filepath.Join(latest, "latest.md")] = []byte(rep.Markdown("latest.svg"))
		files[filepath.Join(latest, "latest.svg")] = svg
	}
	for p, b := range files {
		if err := os.WriteFile(p+".tmp", b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return err
		}
	}
	return nil
}

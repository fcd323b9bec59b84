// Command bench is the driver behind `make bench` (hack/bench.sh): it
// measures tupper and containerd's own snapshotters through one private
// containerd, in paired interleaved runs, and writes the results as
// Markdown, JSON and an SVG chart.
//
// Each benchmark is a function from the bench environment to result rows
// (see benchmarks below); start latency and shim memory, once the shim
// lands, are further entries of that list.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"
)

// namespace is the containerd namespace every benchmark works in.
const namespace = "tupper-bench"

// bench is what a benchmark gets: a client of the private containerd and
// the run's settings.
type bench struct {
	ctx    context.Context
	client *containerd.Client
	runs   int
	// work is a scratch directory (mountpoints) that hack/bench.sh removes.
	work string
	// snapshotters, tupper first; roots by name, for syncfs.
	snapshotters []string
	roots        map[string]string
	imageTar     string
	// tupperMetrics is the daemon's Prometheus /metrics URL, if any.
	tupperMetrics string
	// shim is the setup of the shim benchmarks (shims.go).
	shim shimConfig
}

// benchmark is one measurement function; its rows go into the report in
// this order.
type benchmark struct {
	name string
	run  func(b *bench) ([]*Result, error)
}

var benchmarks = []benchmark{
	{"ops", (*bench).snapshotOps},
	{"usage", (*bench).usage},
	{"unpack", (*bench).unpack},
	{"start", (*bench).startLatency},
	{"exec", (*bench).execLatency},
	{"memory", (*bench).memory},
	{"grouped", (*bench).memoryGrouped},
	{"density", (*bench).density},
	{"checkpoint", (*bench).checkpointRestore},
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, "; ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var (
		address  = flag.String("address", "", "containerd socket")
		runs     = flag.Int("runs", 10, "paired rounds per metric")
		image    = flag.String("image", "", "image archive (mkimage -kind big) for the unpack benchmark")
		work     = flag.String("work", "", "scratch directory for mountpoints")
		out      = flag.String("out", "", "directory for results.{md,json,svg}")
		latest   = flag.String("latest", "", "directory for latest.{md,svg} (empty: none)")
		repo     = flag.String("repo", ".", "tupper repository, for git describe")
		bin      = flag.String("tupper-bin", "", "tupper snapshotter binary, for --version")
		metrics  = flag.String("tupper-metrics", "", "tupper's /metrics URL")
		rootsArg = flag.String("roots", "", "snapshotter=root,... (syncfs after unpack)")
		only     = flag.String("only", "", "comma-separated benchmarks to run (ops,usage,unpack,start,memory,grouped,density,checkpoint; default all)")
		render   = flag.String("render", "", "only rewrite the report of this results.json into --out (and --latest)")
		notes    listFlag
		sc       shimConfig
		storage  listFlag
	)
	flag.StringVar(&sc.busyboxTar, "busybox", "", "busybox image archive (mkimage -kind busybox) for the shim benchmarks")
	flag.StringVar(&sc.idPrefix, "id-prefix", "tb", "prefix of every container id (cgroup and runc state cleanup match it)")
	flag.StringVar(&sc.tupperNet, "tupper-runtime-config", "", "tupper runtime options TOML (own bridge, subnet, IPAM dir)")
	flag.StringVar(&sc.tupperNoNet, "tupper-runtime-config-nonet", "", "the same with NetworkMode = \"none\"")
	flag.StringVar(&sc.runcRoot, "runc-root", "", "runc state root for the runc shim")
	flag.IntVar(&sc.memRuns, "mem-runs", 3, "paired rounds of the shim memory benchmark")
	flag.IntVar(&sc.densityRuns, "density-runs", 2, "paired rounds of the density benchmark")
	flag.StringVar(&sc.noopShim, "noop-shim", "", "hack/noopshim's binary: the start latency floor (none: no floor rows)")
	flag.Var(&notes, "note", "a line for the header (repeatable)")
	flag.Var(&storage, "storage", "subject=where the subject keeps its data, for the header (repeatable)")
	flag.Parse()
	if *render != "" {
		if err := rerender(*render, *out, *latest); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *address == "" || *out == "" || *work == "" || *runs < 1 {
		fmt.Fprintln(os.Stderr, "bench: --address, --out, --work and --runs >= 1 are required")
		flag.Usage()
		os.Exit(2)
	}
	sc.address = *address
	if err := run(*address, *runs, *image, *work, *out, *latest, *repo, *bin, *metrics, *rootsArg, *only, sc, storage, notes); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(address string, runs int, image, work, out, latest, repo, bin, metrics, roots, only string, sc shimConfig, storage, notes []string) error {
	started := time.Now()
	client, err := containerd.New(address, containerd.WithTimeout(30*time.Second))
	if err != nil {
		return err
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), namespace)
	// Everything the benchmarks create belongs to one lease, or
	// containerd's garbage collector would remove committed snapshots
	// that no image references yet, in the middle of a round.
	ctx, done, err := client.WithLease(ctx, leases.WithExpiration(2*time.Hour))
	if err != nil {
		return err
	}
	defer done(context.WithoutCancel(ctx))

	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	b := &bench{
		ctx:           ctx,
		client:        client,
		runs:          runs,
		work:          work,
		snapshotters:  []string{"tupper", "btrfs", "overlayfs"},
		roots:         pairs(roots),
		imageTar:      image,
		tupperMetrics: metrics,
		shim:          sc,
	}
	rep := &Report{
		Started:  started,
		Runs:     runs,
		Machine:  machine(),
		Versions: versions(ctx, client, repo, bin),
		Storage:  map[string]string{},
		Notes:    notes,
	}

	for _, kv := range storage {
		if k, v, ok := strings.Cut(kv, "="); ok {
			rep.Storage[k] = v
		}
	}
	want := map[string]bool{}
	for _, n := range strings.Split(only, ",") {
		if n != "" {
			want[n] = true
		}
	}
	for _, bm := range benchmarks {
		if len(want) > 0 && !want[bm.name] {
			continue
		}
		t0 := time.Now()
		fmt.Fprintf(os.Stderr, "bench: %s ...\n", bm.name)
		rows, err := bm.run(b)
		if err != nil {
			return fmt.Errorf("%s: %w", bm.name, err)
		}
		fmt.Fprintf(os.Stderr, "bench: %s done in %s\n", bm.name, time.Since(t0).Round(time.Second))
		rep.Results = append(rep.Results, rows...)
	}
	rep.Machine["load after"] = loadavg()
	rep.Duration = time.Since(started).Round(time.Second).String()

	fmt.Print(rep.Table())
	return rep.write(out, latest)
}

// rerender writes the Markdown and SVG of an earlier run again, e.g. after
// a change to the chart.
func rerender(path, out, latest string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if out == "" {
		out = filepath.Dir(path)
	}
	return rep.write(out, latest)
}

// pairs parses "a=x,b=y".
func pairs(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func machine() map[string]string {
	m := map[string]string{
		"cores":       fmt.Sprint(runtime.NumCPU()),
		"load before": loadavg(),
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m["kernel"] = "Linux " + unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			var kb int64
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				m["memory"] = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				break
			}
		}
	}
	return m
}

// loadavg is the 1, 5 and 15 minute load average: how busy the shared
// machine was.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func versions(ctx context.Context, client *containerd.Client, repo, bin string) map[string]string {
	v := map[string]string{"go": runtime.Version()}
	if cv, err := client.Version(ctx); err == nil {
		v["containerd"] = cv.Version
	}
	v["runc"] = strings.TrimPrefix(firstLine(exec.Command("runc", "--version").Output()), "runc version ")
	// The runc shim containerd finds on its PATH (hack/bench.sh puts
	// /usr/local/bin first).
	if p, err := exec.LookPath("containerd-shim-runc-v2"); err == nil {
		v["runc shim"] = p + " " + versionLine(exec.Command(p, "-v").Output())
	}
	tupper := firstLine(exec.Command("git", "-C", repo, "describe", "--tags", "--always", "--dirty").Output())
	if bin != "" {
		if bv := firstLine(exec.Command(bin, "--version").Output()); bv != "" {
			tupper += " (daemon: " + bv + ")"
		}
	}
	v["tupper"] = tupper
	return v
}

// versionLine is the value of the "Version:" line of a shim's -v.
func versionLine(b []byte, err error) string {
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == "Version" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func firstLine(b []byte, err error) string {
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line
}

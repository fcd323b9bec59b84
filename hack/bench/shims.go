package main

// The shim half of make bench: start latency (ctr run and the task API),
// shim memory (one container, 50 containers, 10 groups of 5) and density
// (200 containers, 8 at a time), tupper's runtime on tupper's snapshotter
// against containerd-shim-runc-v2 on overlayfs (and on the built-in btrfs
// for start latency).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
)

const (
	tupperRuntime = "io.containerd.tupper.v2"
	runcRuntime   = "io.containerd.runc.v2"
)

// stack is one way to run a container: a runtime with its options on a
// snapshotter.
type stack struct {
	name        string // subject name in the report
	runtime     string
	snapshotter string
	opts        any      // runtime options for the Go client
	ctrArgs     []string // the same for `ctr run`
	group       string   // the shim's group annotation
}

// shimConfig is what the shim benchmarks need beyond the snapshotter ones.
type shimConfig struct {
	address     string // containerd's socket, for ctr and for finding shims
	busyboxTar  string
	idPrefix    string // every container id starts with it (cleanup matches it)
	tupperNet   string // tupper runtime options TOML: own bridge, subnet, IPAM dir
	tupperNoNet string // the same with NetworkMode = "none"
	runcRoot    string // runc's state root, ours alone
	memRuns     int
	densityRuns int
	noopShim    string // hack/noopshim's binary, for the start latency floor
}

// tupperStack is tupper's runtime, with the runtime options file cfg, on
// tupper's snapshotter.
func tupperStack(name, cfg string) stack {
	return stack{
		name: name, runtime: tupperRuntime, snapshotter: "tupper",
		opts:    &runtimeoptions.Options{ConfigPath: cfg},
		ctrArgs: []string{"--runtime", tupperRuntime, "--runtime-config-path", cfg, "--snapshotter", "tupper"},
		group:   "io.containerd.tupper.v2.group",
	}
}

func (b *bench) stacks() (tupper, tupperNoNet, runcOverlay, runcBtrfs stack) {
	c := b.shim
	runc := func(name, sn string) stack {
		return stack{
			name: name, runtime: runcRuntime, snapshotter: sn,
			opts:    &runcoptions.Options{Root: c.runcRoot},
			ctrArgs: []string{"--runtime", runcRuntime, "--runc-root", c.runcRoot, "--snapshotter", sn},
			group:   "io.containerd.runc.v2.group",
		}
	}
	return tupperStack("tupper", c.tupperNet), tupperStack("tupper (no net)", c.tupperNoNet),
		runc("runc+overlayfs", "overlayfs"), runc("runc+btrfs", "btrfs")
}

// busybox imports the busybox image and unpacks it into every snapshotter
// the shim benchmarks use.
func (b *bench) busybox() (containerd.Image, error) {
	if b.shim.busyboxTar == "" {
		return nil, errors.New("no --busybox image")
	}
	f, err := os.Open(b.shim.busyboxTar)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	imgs, err := b.client.Import(b.ctx, f)
	if err != nil {
		return nil, fmt.Errorf("import busybox: %w", err)
	}
	if len(imgs) != 1 {
		return nil, fmt.Errorf("import: %d images in %s, want 1", len(imgs), b.shim.busyboxTar)
	}
	img, err := b.client.GetImage(b.ctx, imgs[0].Name)
	if err != nil {
		return nil, err
	}
	for _, sn := range []string{"tupper", "overlayfs", "btrfs"} {
		if err := img.Unpack(b.ctx, sn); err != nil {
			return nil, fmt.Errorf("unpack busybox into %s: %w", sn, err)
		}
	}
	return img, nil
}

// seq names containers uniquely within the run.
var (
	seqMu sync.Mutex
	seq   int
)

func (b *bench) newID(kind string) string {
	seqMu.Lock()
	defer seqMu.Unlock()
	seq++
	return fmt.Sprintf("%s-%s-%d", b.shim.idPrefix, kind, seq)
}

// startRows are startLatency's results. Rows come in pairs, tupper with
// its bridge network and with NetworkMode=none, against the same runc
// samples.
type startRows struct {
	ctrNet, ctrNone, ctrSeccomp, apiNet, apiNone, taskNet, taskNone *Result
	phaseNet, phaseNone                                             []*Result
}

func newStartRows(subjects []string, baseline string) *startRows {
	row := func(metric, note string, withTarget bool) *Result {
		r := newResult("start latency", metric, "ms", subjects)
		r.Note = note
		if withTarget {
			r.Target = &Target{Baseline: baseline, MaxRatio: 0.55, Text: "≤ 0.55× runc+overlayfs"}
		}
		return r
	}
	rs := &startRows{
		ctrNet: row("ctr run --rm true, tupper with its bridge network",
			"`ctr run --rm <busybox> true`, the whole ctr command timed (its own startup, gRPC, image and snapshot, task, wait, delete). "+
				"tupper: tupper runtime on tupper's snapshotter, each container with a veth on the bench's own bridge (tupper's default network). "+
				"runc+overlayfs, runc+btrfs: containerd-shim-runc-v2 and runc on containerd's snapshotters; runc containers get a new network namespace with only lo (no network). "+
				"The busybox image is unpacked in every snapshotter beforehand.", true),
		ctrNone: row("ctr run --rm true, tupper NetworkMode=none",
			"the same with tupper's runtime option NetworkMode = \"none\" (a new network namespace with only lo, as runc's): the like-for-like comparison", true),
		ctrSeccomp: row("ctr run --rm --seccomp true, tupper with its bridge network",
			"the bridge row's command with `--seccomp`: containerd's default seccomp profile, the one nerdctl and CRI's RuntimeDefault apply. "+
				"tupper compiles a profile once and shares the program between shims (/run/tupper/seccomp), so only the warm-up compiles it; runc compiles it in every container", true),
		apiNet: row("task API, tupper with its bridge network",
			"containerd's Go client, in process: NewContainer (spec, snapshot), NewTask, Wait, Start, exit of `true`, task Delete, container Delete with its snapshot; no ctr. tupper with its bridge network", true),
		apiNone: row("task API, tupper NetworkMode=none", "the same, tupper with NetworkMode = \"none\"", true),
		taskNet: row("task only (NewTask to task Delete), tupper with its bridge network",
			"the runtime's part of the task API row: NewTask, Start, exit, task Delete (no container record, no snapshot)", false),
		taskNone: row("task only (NewTask to task Delete), tupper NetworkMode=none", "the same, tupper with NetworkMode = \"none\"", false),
	}
	// Where the task API row's time goes, phase by phase, so a profile
	// can start from the phase that differs.
	for _, ph := range taskPhases {
		r := newResult("start latency by phase (task API)", ph.name+", tupper with its bridge network", "ms", subjects)
		r.Note = ph.note
		r.Target = ph.target(baseline)
		rs.phaseNet = append(rs.phaseNet, r)
		r = newResult("start latency by phase (task API)", ph.name+", tupper NetworkMode=none", "ms", subjects)
		r.Note = "the same, tupper with NetworkMode = \"none\""
		r.Target = ph.target(baseline)
		rs.phaseNone = append(rs.phaseNone, r)
	}
	return rs
}

func (rs *startRows) results() []*Result {
	out := []*Result{rs.ctrNet, rs.ctrNone, rs.ctrSeccomp, rs.apiNet, rs.apiNone, rs.taskNet, rs.taskNone}
	out = append(out, rs.phaseNet...)
	return append(out, rs.phaseNone...)
}

// startLatency times one short-lived container (`true`) from nothing to
// gone, through ctr and through the Go client's task API.
func (b *bench) startLatency() ([]*Result, error) {
	img, err := b.busybox()
	if err != nil {
		return nil, err
	}
	defer b.removeContainers()
	tup, none, ovl, btr := b.stacks()
	all := []stack{tup, none, ovl, btr}
	noop, haveNoop := b.noopStack()
	if haveNoop {
		all = append(all, noop)
	}
	var floor floorRows
	rs := newStartRows([]string{"tupper", ovl.name, btr.name}, ovl.name)
	record := func(s stack, rNet, rNone *Result, v float64) {
		switch s.name {
		case tup.name:
			rNet.add("tupper", v)
		case none.name:
			rNone.add("tupper", v)
		default:
			rNet.add(s.name, v)
			rNone.add(s.name, v)
		}
	}
	byName := map[string]stack{}
	var names []string
	for _, s := range all {
		byName[s.name] = s
		names = append(names, s.name)
	}
	// A warm-up of each stack, untimed: the first container of a runtime
	// pays for caches (binaries, bridge creation) no later one does.
	for _, s := range all {
		if _, err := b.ctrRun(s, img.Name()); err != nil {
			return nil, fmt.Errorf("warm-up %s: %w", s.name, err)
		}
		if s.name == noopName {
			continue
		}
		if _, err := b.ctrRun(s, img.Name(), "--seccomp"); err != nil {
			return nil, fmt.Errorf("warm-up %s with seccomp: %w", s.name, err)
		}
	}
	before, metricsErr := b.daemonTimes()
	err = interleave(b.runs, names, func(round int, name string) error {
		s := byName[name]
		if s.name == noopName {
			return floor.round(b, s, img)
		}
		d, err := b.ctrRun(s, img.Name())
		if err != nil {
			return err
		}
		record(s, rs.ctrNet, rs.ctrNone, ms(d))
		if s.name != none.name {
			if d, err = b.ctrRun(s, img.Name(), "--seccomp"); err != nil {
				return err
			}
			if s.name == tup.name {
				rs.ctrSeccomp.add("tupper", ms(d))
			} else {
				rs.ctrSeccomp.add(s.name, ms(d))
			}
		}
		t, err := b.taskRun(s, img)
		if err != nil {
			return err
		}
		record(s, rs.apiNet, rs.apiNone, ms(t[len(t)-1].Sub(t[0])))
		record(s, rs.taskNet, rs.taskNone, ms(t[5].Sub(t[1])))
		for i := range taskPhases {
			record(s, rs.phaseNet[i], rs.phaseNone[i], ms(t[i+1].Sub(t[i])))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if after, err := b.daemonTimes(); metricsErr == nil && err == nil {
		rs.noteDaemonTimes(before, after)
	}
	res := rs.results()
	if haveNoop {
		fr, err := floor.results(rs, ovl.name)
		if err != nil {
			return nil, err
		}
		res = append(res, fr...)
	}
	return res, nil
}

// noteDaemonTimes says, under the phases that call tupper's snapshotter,
// how much of them its daemon spent handling the call (both tupper
// stacks' ctr and Go client runs, from its /metrics).
func (rs *startRows) noteDaemonTimes(before, after handling) {
	for _, call := range []struct{ phase, method string }{{"NewContainer", "Prepare"}, {"container Delete", "Remove"}} {
		i := slices.IndexFunc(taskPhases, func(ph taskPhase) bool { return ph.name == call.phase })
		if mean, ok := after.since(before, call.method); ok && i >= 0 {
			rs.phaseNet[i].Note += fmt.Sprintf("; tupper's daemon itself spent %.2f ms on average handling %s in this group (gRPC server time from its /metrics)", mean, call.method)
		}
	}
}

// taskPhase is one step of taskRun; maxRatio, when set, is the issue's
// target for it against runc+overlayfs.
type taskPhase struct {
	name, note string
	maxRatio   float64
}

func (ph taskPhase) target(baseline string) *Target {
	if ph.maxRatio == 0 {
		return nil
	}
	return &Target{Baseline: baseline, MaxRatio: ph.maxRatio, Text: fmt.Sprintf("≤ %.1f× %s", ph.maxRatio, baseline)}
}

// taskPhases are the steps of taskRun, in order.
var taskPhases = []taskPhase{
	// Issue 18: the snapshot's part of a start at overlayfs speed.
	{"NewContainer", "container record, spec and snapshot Prepare", 1.0},
	{"NewTask", "shim start and the task's Create (namespaces, rootfs, network, cgroup)", 0},
	{"Start", "the task's Start RPC", 0},
	{"exit", "from Start's return to the exit event of `true`", 0},
	{"task Delete", "the task's Delete RPC and the shim's shutdown", 0},
	{"container Delete", "container record and snapshot Remove", 0},
}

// ctrRun times `ctr run --rm [FLAGS] IMAGE ID true` with the stack's
// flags and flags.
func (b *bench) ctrRun(s stack, image string, flags ...string) (time.Duration, error) {
	id := b.newID("ctr")
	args := append([]string{"--address", b.shim.address, "--namespace", namespace, "run", "--rm"}, s.ctrArgs...)
	args = append(args, flags...)
	args = append(args, image, id, "true")
	cmd := exec.CommandContext(b.ctx, "ctr", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t := time.Now()
	err := cmd.Run()
	d := time.Since(t)
	if err != nil {
		return 0, fmt.Errorf("ctr run (%s): %v: %s", s.name, err, strings.TrimSpace(out.String()))
	}
	return d, nil
}

// taskRun runs `true` through the Go client and returns the times that
// begin and end each of taskPhases.
func (b *bench) taskRun(s stack, img containerd.Image) ([]time.Time, error) {
	id := b.newID("api")
	t := []time.Time{time.Now()}
	mark := func() { t = append(t, time.Now()) }
	c, err := b.newContainer(s, img, id, nil, "true")
	if err != nil {
		return nil, err
	}
	mark()
	tk, err := c.NewTask(b.ctx, cio.NullIO)
	if err != nil {
		c.Delete(b.ctx, containerd.WithSnapshotCleanup)
		return nil, fmt.Errorf("%s: new task: %w", s.name, err)
	}
	mark()
	exitCh, err := tk.Wait(b.ctx)
	if err == nil {
		err = tk.Start(b.ctx)
	}
	if err != nil {
		tk.Delete(b.ctx, containerd.WithProcessKill)
		c.Delete(b.ctx, containerd.WithSnapshotCleanup)
		return nil, fmt.Errorf("%s: start: %w", s.name, err)
	}
	mark()
	st := <-exitCh
	mark()
	if _, err := tk.Delete(b.ctx); err != nil {
		return nil, fmt.Errorf("%s: task delete: %w", s.name, err)
	}
	mark()
	if err := c.Delete(b.ctx, containerd.WithSnapshotCleanup); err != nil {
		return nil, fmt.Errorf("%s: container delete: %w", s.name, err)
	}
	mark()
	if code, _, err := st.Result(); err != nil || code != 0 {
		return nil, fmt.Errorf("%s: `true` exited %d (%v)", s.name, code, err)
	}
	return t, nil
}

func (b *bench) newContainer(s stack, img containerd.Image, id string, annotations map[string]string, args ...string) (containerd.Container, error) {
	specOpts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs(args...)}
	if len(annotations) > 0 {
		specOpts = append(specOpts, oci.WithAnnotations(annotations))
	}
	c, err := b.client.NewContainer(b.ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(s.snapshotter),
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(s.runtime, s.opts),
		containerd.WithNewSpec(specOpts...),
	)
	if err != nil {
		return nil, fmt.Errorf("%s: new container: %w", s.name, err)
	}
	return c, nil
}

// startSleeper starts a long-running container (busybox sleep).
func (b *bench) startSleeper(s stack, img containerd.Image, id, group string) error {
	var ann map[string]string
	if group != "" {
		ann = map[string]string{s.group: group}
	}
	c, err := b.newContainer(s, img, id, ann, "sleep", "86400")
	if err != nil {
		return err
	}
	tk, err := c.NewTask(b.ctx, cio.NullIO)
	if err != nil {
		c.Delete(b.ctx, containerd.WithSnapshotCleanup)
		return fmt.Errorf("%s: new task: %w", s.name, err)
	}
	if err := tk.Start(b.ctx); err != nil {
		tk.Delete(b.ctx, containerd.WithProcessKill)
		c.Delete(b.ctx, containerd.WithSnapshotCleanup)
		return fmt.Errorf("%s: start: %w", s.name, err)
	}
	return nil
}

// parallel runs f(0..n-1) on `workers` goroutines and returns the first
// error.
func parallel(n, workers int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// removeContainers kills and deletes every container of this run (id
// prefix), with its snapshot, 8 at a time.
func (b *bench) removeContainers() error {
	ctx := context.WithoutCancel(b.ctx)
	cs, err := b.client.Containers(ctx)
	if err != nil {
		return err
	}
	var mine []containerd.Container
	for _, c := range cs {
		if strings.HasPrefix(c.ID(), b.shim.idPrefix+"-") {
			mine = append(mine, c)
		}
	}
	err = parallel(len(mine), 8, func(i int) error {
		c := mine[i]
		if tk, err := c.Task(ctx, nil); err == nil {
			if _, err := tk.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("delete task %s: %w", c.ID(), err)
			}
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete container %s: %w", c.ID(), err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return b.waitShimsGone(10 * time.Second)
}

// waitShimsGone waits until no shim of either runtime serves this run's
// namespace: a shim exits shortly after its last container's Delete, and
// the memory rows count the shims of the next step.
func (b *bench) waitShimsGone(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var left []int
		for _, rt := range []string{tupperRuntime, runcRuntime} {
			pids, err := b.shimPids(rt)
			if err != nil {
				return err
			}
			left = append(left, pids...)
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("shims %v still running %s after their containers were deleted", left, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package main

// The shim half of make bench: start latency (ctr run and the task API),
// shim memory (one container, 50 containers, 10 groups of 5) and density
// (200 containers, 8 at a time), tupper's runtime on tupper's snapshotter
// against containerd-shim-runc-v2 on overlayfs (and on the built-in btrfs
// for start latency).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
}

func (b *bench) stacks() (tupper, tupperNoNet, runcOverlay, runcBtrfs stack) {
	c := b.shim
	tup := func(name, cfg string) stack {
		return stack{
			name: name, runtime: tupperRuntime, snapshotter: "tupper",
			opts:    &runtimeoptions.Options{ConfigPath: cfg},
			ctrArgs: []string{"--runtime", tupperRuntime, "--runtime-config-path", cfg, "--snapshotter", "tupper"},
			group:   "io.containerd.tupper.v2.group",
		}
	}
	runc := func(name, sn string) stack {
		return stack{
			name: name, runtime: runcRuntime, snapshotter: sn,
			opts:    &runcoptions.Options{Root: c.runcRoot},
			ctrArgs: []string{"--runtime", runcRuntime, "--runc-root", c.runcRoot, "--snapshotter", sn},
			group:   "io.containerd.runc.v2.group",
		}
	}
	return tup("tupper", c.tupperNet), tup("tupper (no net)", c.tupperNoNet),
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
	subjects := []string{"tupper", ovl.name, btr.name}
	target := func() *Target {
		return &Target{Baseline: ovl.name, MaxRatio: 0.55, Text: "≤ 0.55× runc+overlayfs"}
	}
	row := func(metric, note string, withTarget bool) *Result {
		r := newResult("start latency", metric, "ms", subjects)
		r.Note = note
		if withTarget {
			r.Target = target()
		}
		return r
	}
	ctrNet := row("ctr run --rm true, tupper with its bridge network",
		"`ctr run --rm <busybox> true`, the whole ctr command timed (its own startup, gRPC, image and snapshot, task, wait, delete). "+
			"tupper: tupper runtime on tupper's snapshotter, each container with a veth on the bench's own bridge (tupper's default network). "+
			"runc+overlayfs, runc+btrfs: containerd-shim-runc-v2 and runc on containerd's snapshotters; runc containers get a new network namespace with only lo (no network). "+
			"The busybox image is unpacked in every snapshotter beforehand.", true)
	ctrNone := row("ctr run --rm true, tupper NetworkMode=none",
		"the same with tupper's runtime option NetworkMode = \"none\" (a new network namespace with only lo, as runc's): the like-for-like comparison", true)
	apiNet := row("task API, tupper with its bridge network",
		"containerd's Go client, in process: NewContainer (spec, snapshot), NewTask, Wait, Start, exit of `true`, task Delete, container Delete with its snapshot; no ctr. tupper with its bridge network", true)
	apiNone := row("task API, tupper NetworkMode=none", "the same, tupper with NetworkMode = \"none\"", true)
	taskNet := row("task only (NewTask to task Delete), tupper with its bridge network",
		"the runtime's part of the task API row: NewTask, Start, exit, task Delete (no container record, no snapshot)", false)
	taskNone := row("task only (NewTask to task Delete), tupper NetworkMode=none", "the same, tupper with NetworkMode = \"none\"", false)
	// Where the task API row's time goes, phase by phase, so a profile
	// can start from the phase that differs.
	var phaseNet, phaseNone []*Result
	for _, ph := range taskPhases {
		r := newResult("start latency by phase (task API)", ph.name+", tupper with its bridge network", "ms", subjects)
		r.Note = ph.note
		r.Target = ph.target(ovl.name)
		phaseNet = append(phaseNet, r)
		r = newResult("start latency by phase (task API)", ph.name+", tupper NetworkMode=none", "ms", subjects)
		r.Note = "the same, tupper with NetworkMode = \"none\""
		r.Target = ph.target(ovl.name)
		phaseNone = append(phaseNone, r)
	}

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
	}
	err = interleave(b.runs, names, func(round int, name string) error {
		s := byName[name]
		d, err := b.ctrRun(s, img.Name())
		if err != nil {
			return err
		}
		record(s, ctrNet, ctrNone, ms(d))
		t, err := b.taskRun(s, img)
		if err != nil {
			return err
		}
		record(s, apiNet, apiNone, ms(t[len(t)-1].Sub(t[0])))
		record(s, taskNet, taskNone, ms(t[5].Sub(t[1])))
		for i := range taskPhases {
			record(s, phaseNet[i], phaseNone[i], ms(t[i+1].Sub(t[i])))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := []*Result{ctrNet, ctrNone, apiNet, apiNone, taskNet, taskNone}
	out = append(out, phaseNet...)
	return append(out, phaseNone...), nil
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

// ctrRun times `ctr run --rm IMAGE ID true` with the stack's flags.
func (b *bench) ctrRun(s stack, image string) (time.Duration, error) {
	id := b.newID("ctr")
	args := append([]string{"--address", b.shim.address, "--namespace", namespace, "run", "--rm"}, s.ctrArgs...)
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
	return parallel(len(mine), 8, func(i int) error {
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
}

// shimPids lists the shim processes serving this containerd's namespace:
// a containerd-shim-*-v2 whose arguments name its socket and our
// namespace (the transient `start`/`delete` invocations excluded).
func (b *bench) shimPids(runtime string) ([]int, error) {
	bin := "containerd-shim-tupper-v2"
	if runtime == runcRuntime {
		bin = "containerd-shim-runc-v2"
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) != bin {
			continue
		}
		var addr, ns, action string
		for i := 1; i < len(args); i++ {
			switch args[i] {
			case "-address", "--address":
				if i+1 < len(args) {
					addr = args[i+1]
					i++
				}
			case "-namespace", "--namespace":
				if i+1 < len(args) {
					ns = args[i+1]
					i++
				}
			case "-id", "--id", "-publish-binary", "--publish-binary", "-bundle", "--bundle":
				i++
			default:
				if !strings.HasPrefix(args[i], "-") {
					action = args[i]
				}
			}
		}
		if addr == b.shim.address && ns == namespace && action == "" {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// memKiB is RSS, PSS and anonymous memory of one process, from
// smaps_rollup.
func memKiB(pid int) (rss, pss, anon float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var gotR, gotP, gotA bool
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(fs[1], 64)
		if err != nil {
			continue
		}
		switch fs[0] {
		case "Rss:":
			rss, gotR = v, true
		case "Pss:":
			pss, gotP = v, true
		case "Anonymous:":
			anon, gotA = v, true
		}
	}
	if !gotR || !gotP || !gotA {
		return 0, 0, 0, fmt.Errorf("pid %d: no Rss/Pss/Anonymous in smaps_rollup", pid)
	}
	return rss, pss, anon, sc.Err()
}

// settle is how long after the last start the shims' memory is read:
// after the start's garbage, before pkg/shim's first FreeOSMemory (30 s).
const settle = 2 * time.Second

// mem is the memory of a set of shims, in MiB.
type mem struct{ rss, pss, anon float64 }

// shimMemory sums RSS, PSS and anonymous memory over the stack's shims and
// checks their number.
func (b *bench) shimMemory(s stack, want int) (m mem, err error) {
	time.Sleep(settle)
	pids, err := b.shimPids(s.runtime)
	if err != nil {
		return m, err
	}
	if len(pids) != want {
		return m, fmt.Errorf("%s: %d shims running, want %d", s.name, len(pids), want)
	}
	for _, pid := range pids {
		r, p, a, err := memKiB(pid)
		if err != nil {
			return m, err
		}
		m.rss += r / 1024
		m.pss += p / 1024
		m.anon += a / 1024
	}
	return m, nil
}

// sleeperStacks is what memory and density start from: the busybox image
// and the stacks they compare (tupper, tupper without network, runc on
// overlayfs), also by name.
func (b *bench) sleeperStacks() (img containerd.Image, tup, none, ovl stack, byName map[string]stack, err error) {
	if img, err = b.busybox(); err != nil {
		return
	}
	tup, none, ovl, _ = b.stacks()
	byName = map[string]stack{tup.name: tup, none.name: none, ovl.name: ovl}
	return
}

// removeContainersAfter is deferred by benchmarks that start containers:
// it removes them, and reports a failure unless the benchmark failed first.
func (b *bench) removeContainersAfter(retErr *error) {
	if err := b.removeContainers(); err != nil && *retErr == nil {
		*retErr = err
	}
}

// memory measures the shims of 1 container, of 50 containers and of 10
// groups of 5, tupper against runc.
func (b *bench) memory() (_ []*Result, retErr error) {
	img, tup, none, ovl, byName, err := b.sleeperStacks()
	if err != nil {
		return nil, err
	}
	defer b.removeContainersAfter(&retErr)
	subjects := []string{tup.name, ovl.name}
	mk := func(metric string) *Result { return newResult("shim memory", metric, "MiB", subjects) }
	oneRSS, onePSS, oneAnon := mk("one shim, one container: RSS"), mk("one shim, one container: PSS"), mk("one shim, one container: anonymous")
	oneRSS.Target = &Target{Max: 6, Text: "tupper ≤ 6 MiB RSS"}
	oneAnon.Target = &Target{Max: 2, Text: "tupper ≤ 2 MiB anonymous"}
	// The same for tupper with NetworkMode=none, against the same runc samples.
	noneRSS, noneAnon := mk("one shim, one container, tupper NetworkMode=none: RSS"), mk("one shim, one container, tupper NetworkMode=none: anonymous")
	noneRSS.Target = &Target{Max: 6, Text: "tupper ≤ 6 MiB RSS"}
	noneRSS.Note = "tupper's shim serving a container with NetworkMode = \"none\" (no veth, like runc's), so that the network's share of the shim's memory shows"
	manyRSS, manyPSS := mk("50 containers, one shim each: RSS sum"), mk("50 containers, one shim each: PSS sum")
	manyPSS.Target = &Target{Baseline: ovl.name, MaxRatio: 0.5, Text: "≤ 0.5× runc+overlayfs"}
	grpRSS, grpPSS := mk("10 groups × 5 containers: RSS sum"), mk("10 groups × 5 containers: PSS sum")
	oneRSS.Note = fmt.Sprintf("tupper: containerd-shim-tupper-v2 (tupper runtime on tupper's snapshotter, bridge network); runc+overlayfs: containerd-shim-runc-v2. "+
		"Containers run busybox `sleep`, started through the Go client; memory read from /proc/<shim pid>/smaps_rollup %s after the last start (before pkg/shim's first FreeOSMemory, at 30 s). "+
		"The shim's processes only, not the containers'. "+
		"RSS counts every resident page the shim maps, shared ones too: on this kernel nearly the whole executable (12–13 MiB of either ~20 MB Go binary) and libc are mapped resident, for tupper and runc alike", settle)
	onePSS.Note = "PSS divides each shared page among the processes mapping it, e.g. the executable among all shims of the same binary (on a shared machine also other users' shims)"
	oneAnon.Note = "Anonymous in smaps_rollup: the shim's own heap, stacks and runtime data, private to it; the part of RSS that grows with what the shim does"
	manyRSS.Note = "50 containers started 8 at a time, no group annotation: one shim per container, summed over the shims"
	grpRSS.Note = "50 containers in 10 groups of 5 by annotation (io.containerd.tupper.v2.group for tupper, io.containerd.runc.v2.group for runc): 10 shims, summed. " +
		"CRI pods (crictl) are not measured here"
	err = interleave(b.shim.memRuns, []string{tup.name, none.name, ovl.name}, func(round int, name string) error {
		s := byName[name]
		// One container.
		if err := b.startSleeper(s, img, b.newID("mem1"), ""); err != nil {
			return err
		}
		m, err := b.shimMemory(s, 1)
		if err != nil {
			return err
		}
		if err := b.removeContainers(); err != nil {
			return err
		}
		switch name {
		case none.name:
			noneRSS.add(tup.name, m.rss)
			noneAnon.add(tup.name, m.anon)
			return nil // the rest is measured with tupper's default network
		case ovl.name:
			noneRSS.add(name, m.rss)
			noneAnon.add(name, m.anon)
		}
		oneRSS.add(name, m.rss)
		onePSS.add(name, m.pss)
		oneAnon.add(name, m.anon)
		// 50 containers, 50 shims.
		if err := parallel(50, 8, func(i int) error { return b.startSleeper(s, img, b.newID("mem50"), "") }); err != nil {
			return err
		}
		if m, err = b.shimMemory(s, 50); err != nil {
			return err
		}
		manyRSS.add(name, m.rss)
		manyPSS.add(name, m.pss)
		if err := b.removeContainers(); err != nil {
			return err
		}
		// 10 groups of 5.
		grp := fmt.Sprintf("%s-grp-%d", b.shim.idPrefix, round)
		if err := parallel(50, 8, func(i int) error {
			return b.startSleeper(s, img, b.newID("grp"), fmt.Sprintf("%s-%d", grp, i%10))
		}); err != nil {
			return err
		}
		if m, err = b.shimMemory(s, 10); err != nil {
			return err
		}
		grpRSS.add(name, m.rss)
		grpPSS.add(name, m.pss)
		return b.removeContainers()
	})
	if err != nil {
		return nil, err
	}
	return []*Result{oneRSS, onePSS, oneAnon, noneRSS, noneAnon, manyRSS, manyPSS, grpRSS, grpPSS}, nil
}

// density starts 200 `sleep` containers, 8 at a time, and reports how many
// per second and what their shims cost.
func (b *bench) density() (_ []*Result, retErr error) {
	const n, workers = 200, 8
	img, tup, none, ovl, byName, err := b.sleeperStacks()
	if err != nil {
		return nil, err
	}
	defer b.removeContainersAfter(&retErr)
	subjects := []string{tup.name, ovl.name}
	// Rows come in pairs: tupper with its bridge network, and with
	// NetworkMode=none, each against the same runc+overlayfs samples.
	type rows struct{ rate, rss, pss *Result }
	mk := func(suffix string) rows {
		return rows{
			rate: newResult("density", fmt.Sprintf("containers started per second, %d at a time, to %d running, %s", workers, n, suffix), "/s", subjects),
			rss:  newResult("density", fmt.Sprintf("%d running: shims' RSS sum, %s", n, suffix), "MiB", subjects),
			pss:  newResult("density", fmt.Sprintf("%d running: shims' PSS sum, %s", n, suffix), "MiB", subjects),
		}
	}
	withNet, noNet := mk("tupper with its bridge network"), mk("tupper NetworkMode=none")
	withNet.rate.Note = fmt.Sprintf("%d busybox `sleep` containers started through the Go client (NewContainer, NewTask, Start), %d workers, timed from the first start to the %dth; "+
		"tupper with its bridge network (a veth each), runc+overlayfs with a new network namespace and no network. Longer is better, so tupper/runc above 1 is tupper faster. "+
		"The containers are removed between runs (untimed)", n, workers, n)
	noNet.rate.Note = "the same with tupper's NetworkMode = \"none\": the like-for-like comparison"
	withNet.rss.Note = fmt.Sprintf("summed over the %d shims once all are running (%s after the last start)", n, settle)
	err = interleave(b.shim.densityRuns, []string{tup.name, none.name, ovl.name}, func(round int, name string) error {
		s := byName[name]
		t := time.Now()
		if err := parallel(n, workers, func(i int) error { return b.startSleeper(s, img, b.newID("dens"), "") }); err != nil {
			return err
		}
		r := n / time.Since(t).Seconds()
		m, err := b.shimMemory(s, n)
		if err != nil {
			return err
		}
		var to []rows
		switch name {
		case tup.name:
			to = []rows{withNet}
		case none.name:
			to, name = []rows{noNet}, tup.name
		default:
			to = []rows{withNet, noNet}
		}
		for _, rs := range to {
			rs.rate.add(name, r)
			rs.rss.add(name, m.rss)
			rs.pss.add(name, m.pss)
		}
		return b.removeContainers()
	})
	if err != nil {
		return nil, err
	}
	return []*Result{withNet.rate, noNet.rate, withNet.rss, noNet.rss, withNet.pss, noNet.pss}, nil
}

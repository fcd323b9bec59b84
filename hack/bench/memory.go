package main

// Shim memory and density: what tupper's shims cost against
// containerd-shim-runc-v2's, read from smaps_rollup (one container, 50,
// 10 groups of 5; 200 started 8 at a time).

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
)

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
// after the start's garbage, before runc's shim's first FreeOSMemory
// (30 s); tupper's shim returns memory 1 s after its last call.
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

// memoryRows are memory's results, with their targets and notes.
type memoryRows struct {
	oneRSS, onePSS, oneAnon, noneRSS, noneAnon, manyRSS, manyPSS, grpRSS, grpPSS *Result
}

func newMemoryRows(subjects []string, baseline string) memoryRows {
	mk := func(metric string) *Result { return newResult("shim memory", metric, "MiB", subjects) }
	var r memoryRows
	r.oneRSS, r.onePSS, r.oneAnon = mk("one shim, one container: RSS"), mk("one shim, one container: PSS"), mk("one shim, one container: anonymous")
	r.oneRSS.Target = &Target{Max: 6, Text: "tupper ≤ 6 MiB RSS"}
	r.oneAnon.Target = &Target{Max: 2, Text: "tupper ≤ 2 MiB anonymous"}
	// The same for tupper with NetworkMode=none, against the same runc samples.
	r.noneRSS, r.noneAnon = mk("one shim, one container, tupper NetworkMode=none: RSS"), mk("one shim, one container, tupper NetworkMode=none: anonymous")
	r.noneRSS.Target = &Target{Max: 6, Text: "tupper ≤ 6 MiB RSS"}
	r.noneRSS.Note = "tupper's shim serving a container with NetworkMode = \"none\" (no veth, like runc's), so that the network's share of the shim's memory shows"
	r.manyRSS, r.manyPSS = mk("50 containers, one shim each: RSS sum"), mk("50 containers, one shim each: PSS sum")
	r.manyPSS.Target = &Target{Baseline: baseline, MaxRatio: 0.5, Text: "≤ 0.5× runc+overlayfs"}
	r.grpRSS, r.grpPSS = mk("10 groups × 5 containers: RSS sum"), mk("10 groups × 5 containers: PSS sum")
	r.oneRSS.Note = fmt.Sprintf("tupper: containerd-shim-tupper-v2 (tupper runtime on tupper's snapshotter, bridge network); runc+overlayfs: containerd-shim-runc-v2. "+
		"Containers run busybox `sleep`, started through the Go client; memory read from /proc/<shim pid>/smaps_rollup %s after the last start: after tupper's shim returned its start's garbage to the kernel (1 s after its last call), before runc's shim does (30 s after its start). "+
		"The shim's processes only, not the containers'. "+
		"RSS counts every resident page the shim maps, shared ones too: on this kernel nearly the whole executable (12–13 MiB of either ~20 MB Go binary) and libc are mapped resident, for tupper and runc alike", settle)
	r.onePSS.Note = "PSS divides each shared page among the processes mapping it, e.g. the executable among all shims of the same binary (on a shared machine also other users' shims)"
	r.oneAnon.Note = "Anonymous in smaps_rollup: the shim's own heap, stacks and runtime data, private to it; the part of RSS that grows with what the shim does"
	r.manyRSS.Note = "50 containers started 8 at a time, no group annotation: one shim per container, summed over the shims"
	r.grpRSS.Note = "50 containers in 10 groups of 5 by annotation (io.containerd.tupper.v2.group for tupper, io.containerd.runc.v2.group for runc): 10 shims, summed. " +
		"CRI pods (crictl) are not measured here"
	return r
}

// memory measures the shims of 1 container, of 50 containers and of 10
// groups of 5, tupper against runc.
func (b *bench) memory() (_ []*Result, retErr error) {
	img, tup, none, ovl, byName, err := b.sleeperStacks()
	if err != nil {
		return nil, err
	}
	defer b.removeContainersAfter(&retErr)
	r := newMemoryRows([]string{tup.name, ovl.name}, ovl.name)
	oneRSS, onePSS, oneAnon, noneRSS, noneAnon := r.oneRSS, r.onePSS, r.oneAnon, r.noneRSS, r.noneAnon
	manyRSS, manyPSS, grpRSS, grpPSS := r.manyRSS, r.manyPSS, r.grpRSS, r.grpPSS
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

package main

import (
	"fmt"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// execLatency times an exec of `true` into a running container, as a
// Kubernetes exec probe does every few seconds per pod: the process'
// Exec, Start, its exit and Delete through the Go client. A tupper exec
// is one helper start (see shim/container's sealexe_linux.go); a runc
// exec is `runc exec`, which starts runc twice (itself and runc init).
func (b *bench) execLatency() (_ []*Result, retErr error) {
	img, err := b.busybox()
	if err != nil {
		return nil, err
	}
	defer b.removeContainersAfter(&retErr)
	tup, _, ovl, btr := b.stacks()
	subjects := []string{tup.name, ovl.name, btr.name}
	r := newResult("exec latency", "exec of `true` into a running container", "ms", subjects)
	r.Note = "containerd's Go client: Exec, Wait, Start, the exit of `true`, Delete of the process, in a running busybox `sleep` container of each stack. " +
		"tupper: the shim runs tupper-helper, which execs `true`; runc: the shim runs `runc exec`, which runs runc init"
	tasks := map[string]containerd.Task{}
	procs := map[string]*specs.Process{} // each task's init, running `true`
	byName := map[string]stack{tup.name: tup, ovl.name: ovl, btr.name: btr}
	for _, name := range subjects {
		id := b.newID("exec")
		if err := b.startSleeper(byName[name], img, id, ""); err != nil {
			return nil, err
		}
		c, err := b.client.LoadContainer(b.ctx, id)
		if err != nil {
			return nil, err
		}
		if tasks[name], err = c.Task(b.ctx, nil); err != nil {
			return nil, err
		}
		spec, err := tasks[name].Spec(b.ctx)
		if err != nil {
			return nil, err
		}
		proc := *spec.Process
		proc.Args, proc.Terminal = []string{"true"}, false
		procs[name] = &proc
		// Untimed warm-up: the first exec pays for caches no later one does.
		if _, err := b.execTrue(tasks[name], procs[name], name); err != nil {
			return nil, fmt.Errorf("warm-up %s: %w", name, err)
		}
	}
	err = interleave(b.runs, subjects, func(round int, name string) error {
		d, err := b.execTrue(tasks[name], procs[name], name)
		if err == nil {
			r.add(name, d)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return []*Result{r}, nil
}

// execTrue runs proc (`true`) in task and returns how long that took, in
// milliseconds.
func (b *bench) execTrue(tk containerd.Task, proc *specs.Process, name string) (float64, error) {
	t := time.Now()
	p, err := tk.Exec(b.ctx, b.newID("e"), proc, cio.NullIO)
	if err != nil {
		return 0, fmt.Errorf("%s: exec: %w", name, err)
	}
	exitCh, err := p.Wait(b.ctx)
	if err == nil {
		err = p.Start(b.ctx)
	}
	if err != nil {
		p.Delete(b.ctx)
		return 0, fmt.Errorf("%s: exec start: %w", name, err)
	}
	st := <-exitCh
	if _, err := p.Delete(b.ctx); err != nil {
		return 0, fmt.Errorf("%s: exec delete: %w", name, err)
	}
	d := time.Since(t)
	if code, _, err := st.Result(); err != nil || code != 0 {
		return 0, fmt.Errorf("%s: exec of `true` exited %d (%v)", name, code, err)
	}
	return ms(d), nil
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// groupedStack is tupper with its bridge network and the runtime option
// ShimGrouping = "namespace": one shim for every container of the bench's
// namespace.
func (b *bench) groupedStack() (stack, error) {
	body, err := os.ReadFile(b.shim.tupperNet)
	if err != nil {
		return stack{}, err
	}
	cfg := filepath.Join(filepath.Dir(b.shim.tupperNet), "tupper-runtime-grouped.toml")
	if err := os.WriteFile(cfg, append(body, "ShimGrouping = \"namespace\"\n"...), 0o644); err != nil {
		return stack{}, err
	}
	return tupperStack("tupper (ShimGrouping=namespace)", cfg), nil
}

// memoryGrouped measures 50 containers served by tupper's one shim per
// namespace against runc's one shim each: the density an operator gets by
// giving up per-pod fault isolation.
func (b *bench) memoryGrouped() (_ []*Result, retErr error) {
	img, tup, _, ovl, _, err := b.sleeperStacks()
	if err != nil {
		return nil, err
	}
	grouped, err := b.groupedStack()
	if err != nil {
		return nil, err
	}
	defer b.removeContainersAfter(&retErr)
	subjects := []string{tup.name, ovl.name}
	rss := newResult("shim memory", "50 containers, tupper ShimGrouping=namespace (one shim) against runc's one shim each: RSS sum", "MiB", subjects)
	pss := newResult("shim memory", "50 containers, tupper ShimGrouping=namespace (one shim) against runc's one shim each: PSS sum", "MiB", subjects)
	pss.Target = &Target{Baseline: ovl.name, MaxRatio: 0.5, Text: "≤ 0.5× runc+overlayfs"}
	rss.Note = "tupper with the runtime option ShimGrouping = \"namespace\" (one shim serves every container of the namespace; a shim that dies takes all of their I/O and exit reporting with it), " +
		"runc+overlayfs with containerd-shim-runc-v2, one shim per container; 50 busybox `sleep` containers started 8 at a time; summed over the shims"
	byName := map[string]stack{tup.name: grouped, ovl.name: ovl}
	err = interleave(b.shim.memRuns, subjects, func(round int, name string) error {
		s, want := byName[name], 50
		if name == tup.name {
			want = 1
		}
		if err := parallel(50, 8, func(i int) error { return b.startSleeper(s, img, b.newID("nsgrp"), "") }); err != nil {
			return err
		}
		m, err := b.shimMemory(s, want)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		rss.add(name, m.rss)
		pss.add(name, m.pss)
		return b.removeContainers()
	})
	if err != nil {
		return nil, err
	}
	return []*Result{rss, pss}, nil
}

package shim

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"golang.org/x/sys/unix"
)

// TestHelperBinary: the shim that make build made runs tupper-helper, its
// small helper program from next to it, sealed (not writable through
// /proc/<pid>/exe): a created init is still that helper. The container
// then runs, and so does an exec (whose helper has no pid to look at
// before it execs).
func TestHelperBinary(t *testing.T) {
	e := newEnv(t)
	if _, err := os.Stat(filepath.Join(e.BinDir, "tupper-helper")); err != nil {
		t.Fatalf("no tupper-helper next to the shim under test (make build): %v", err)
	}
	checkStaticMusl(t, e.Shim)
	checkStaticMusl(t, filepath.Join(e.BinDir, "tupper-helper"))
	ctx, tk := e.createSleeper("helper1")
	defer tk.Delete(ctx, client.WithProcessKill)
	// Created, not started: the init is still the helper.
	checkSealedHelper(t, "init", int(tk.Pid()))
	if err := tk.Start(ctx); err != nil {
		t.Fatal(err)
	}
	spec, err := tk.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	proc := *spec.Process
	proc.Args = []string{"true"}
	p, err := tk.Exec(ctx, "e1", &proc, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	exited, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if st := <-exited; st.ExitCode() != 0 {
		t.Fatalf("exec of true: exit status %d", st.ExitCode())
	}
}

// checkStaticMusl: bin has no program interpreter, was not linked
// against glibc, whose start files mark a binary with an ABI note (the
// Makefile links the shim and its helper against musl: glibc's start-up
// costs CPUID traps on a virtual machine at every exec), and names the
// 8 MiB thread stack that musl then gives Go's threads (its own default
// is 128 KiB, and cgo calls run there).
func checkStaticMusl(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stack := uint64(0)
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Errorf("%s is dynamically linked, want static (make build)", bin)
		case elf.PT_GNU_STACK:
			stack = p.Memsz
		}
	}
	if stack != 8<<20 {
		t.Errorf("%s names a %d-byte thread stack (PT_GNU_STACK), want 8 MiB (make build)", bin, stack)
	}
	if f.Section(".note.ABI-tag") != nil {
		t.Errorf("%s has glibc's .note.ABI-tag: linked against glibc, want musl (make build)", bin)
	}
}

// checkSealedHelper: pid runs tupper-helper, and its binary cannot be
// opened for writing through /proc/<pid>/exe.
func checkSealedHelper(t *testing.T, what string, pid int) {
	t.Helper()
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	link, err := os.Readlink(exe)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(link) != "tupper-helper" {
		t.Errorf("%s: the helper runs %s, want tupper-helper", what, link)
	}
	f, err := os.OpenFile(exe, os.O_WRONLY, 0)
	if err == nil {
		f.Close()
		t.Fatalf("%s: opened the helper's binary %s (%s) for writing", what, exe, link)
	}
	if !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.ETXTBSY) {
		t.Errorf("%s: opening the helper's binary for writing: %v, want EROFS", what, err)
	}
}

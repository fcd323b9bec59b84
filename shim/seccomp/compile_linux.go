// Package seccomp compiles OCI seccomp profiles with libseccomp into the
// programs shim/security loads, and keeps them (Cache). Only the parent
// side links it: the helper that becomes a container's process loads a
// program with seccomp(2) and needs no libseccomp.
package seccomp

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/tupper/tupper/shim/security"
)

// tupper builds seccomp filters with libseccomp (libseccomp-golang) rather
// than a pure-Go BPF generator: libseccomp resolves syscall names for every
// architecture a profile lists, splits 64-bit argument comparisons on 32-bit
// ABIs, and is what runc and crun use, so containerd's default profile
// blocks exactly what it blocks under them.

// Compile turns a profile into the program a process loads. Every
// error names the part of the profile that is wrong, so Create can report
// it before any process exists. Syscall names this libseccomp does not
// know are skipped, as under runc, so profiles stay portable across
// kernels and architectures.
func Compile(p *specs.LinuxSeccomp) (*security.SeccompProgram, error) {
	if p == nil {
		return nil, nil
	}
	f, notifies, err := buildFilter(p)
	if err != nil {
		return nil, err
	}
	defer f.Release()
	return exportProgram(f, notifies)
}

// buildFilter adds p's architectures, flags and rules to a new libseccomp
// filter, and reports whether a rule notifies a listener.
func buildFilter(p *specs.LinuxSeccomp) (_ *libseccomp.ScmpFilter, notifies bool, _ error) {
	def, err := action(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return nil, false, fmt.Errorf("linux.seccomp.defaultAction: %w", err)
	}
	if p.DefaultAction == specs.ActNotify {
		// Every call would wait for an agent that gets the listener only
		// through calls of the helper's own (runc refuses it too).
		return nil, false, fmt.Errorf("linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action: %w", errdefs.ErrInvalidArgument)
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, false, fmt.Errorf("seccomp filter: %w", err)
	}
	fail := func(err error) (*libseccomp.ScmpFilter, bool, error) {
		f.Release()
		return nil, false, err
	}
	// The process sets no_new_privs itself when the spec asks for it;
	// libseccomp must not do it behind the spec's back.
	if err := f.SetNoNewPrivsBit(false); err != nil {
		return fail(err)
	}
	if err := addArchitectures(f, p.Architectures); err != nil {
		return fail(err)
	}
	if err := setFlags(f, p.Flags); err != nil {
		return fail(err)
	}
	for i, rule := range p.Syscalls {
		if rule.Action == specs.ActNotify {
			notifies = true
			if err := notifiable(i, rule.Names); err != nil {
				return fail(err)
			}
		}
		if err := addRule(f, def, i, rule); err != nil {
			return fail(err)
		}
	}
	if notifies && p.ListenerPath == "" {
		return fail(fmt.Errorf("linux.seccomp: SCMP_ACT_NOTIFY needs listenerPath: %w", errdefs.ErrInvalidArgument))
	}
	return f, notifies, nil
}

// helperCalls are what the helper itself calls once a notifying filter is
// loaded: handing the listener to the parent, waiting for its answer,
// telling it Start may return, and writing a failure to stderr. Were they
// notified, the helper would wait for an agent that waits for it.
var helperCalls = []string{"sendmsg", "recvmsg", "write"}

func notifiable(i int, names []string) error {
	for _, n := range names {
		if slices.Contains(helperCalls, n) {
			return fmt.Errorf("linux.seccomp.syscalls[%d]: SCMP_ACT_NOTIFY cannot be used for %s, which the runtime calls after loading the filter: %w", i, n, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func addArchitectures(f *libseccomp.ScmpFilter, archs []specs.Arch) error {
	for _, a := range archs {
		arch, err := libseccomp.GetArchFromString(strings.ToLower(strings.TrimPrefix(string(a), "SCMP_ARCH_")))
		if err != nil {
			return fmt.Errorf("linux.seccomp.architectures: %q: %v: %w", a, err, errdefs.ErrInvalidArgument)
		}
		if err := f.AddArch(arch); err != nil {
			return fmt.Errorf("linux.seccomp.architectures: %q: %w", a, err)
		}
	}
	return nil
}

func setFlags(f *libseccomp.ScmpFilter, flags []specs.LinuxSeccompFlag) error {
	for _, flag := range flags {
		var err error
		switch flag {
		case specs.LinuxSeccompFlagLog:
			err = f.SetLogBit(true)
		case specs.LinuxSeccompFlagSpecAllow:
			err = f.SetSSB(true)
		case specs.LinuxSeccompFlagWaitKillableRecv:
			err = f.SetWaitKill(true)
		default:
			err = fmt.Errorf("unsupported flag %q: %w", flag, errdefs.ErrNotImplemented)
		}
		if err != nil {
			return fmt.Errorf("linux.seccomp.flags: %w", err)
		}
	}
	return nil
}

// addRule adds the profile's rule i.
func addRule(f *libseccomp.ScmpFilter, def libseccomp.ScmpAction, i int, rule specs.LinuxSyscall) error {
	act, err := action(rule.Action, rule.ErrnoRet)
	if err != nil {
		return fmt.Errorf("linux.seccomp.syscalls[%d]: %w", i, err)
	}
	if act == def {
		return nil // the kernel does this anyway; libseccomp refuses such rules
	}
	conds, err := conditions(rule.Args)
	if err != nil {
		return fmt.Errorf("linux.seccomp.syscalls[%d]: %w", i, err)
	}
	for _, name := range rule.Names {
		sc, err := libseccomp.GetSyscallFromName(name)
		if err != nil {
			log.L.WithField("syscall", name).Debug("seccomp: syscall unknown to libseccomp, skipped")
			continue
		}
		for _, c := range conds {
			if err := f.AddRuleConditional(sc, act, c); err != nil {
				return fmt.Errorf("linux.seccomp.syscalls[%d] %s: %w", i, name, err)
			}
		}
	}
	return nil
}

// conditions groups a rule's argument comparisons into the rules libseccomp
// accepts: all comparisons of one rule apply together (AND), but libseccomp
// allows one comparison per argument in a rule, so comparisons that repeat
// an argument become separate rules, as runc does.
func conditions(args []specs.LinuxSeccompArg) ([][]libseccomp.ScmpCondition, error) {
	if len(args) == 0 {
		return [][]libseccomp.ScmpCondition{nil}, nil
	}
	repeated, seen := false, map[uint]bool{}
	var all []libseccomp.ScmpCondition
	for _, a := range args {
		op, err := compareOp(a.Op)
		if err != nil {
			return nil, err
		}
		var c libseccomp.ScmpCondition
		if a.Op == specs.OpMaskedEqual {
			c, err = libseccomp.MakeCondition(a.Index, op, a.Value, a.ValueTwo)
		} else {
			c, err = libseccomp.MakeCondition(a.Index, op, a.Value)
		}
		if err != nil {
			return nil, fmt.Errorf("argument %d: %w", a.Index, err)
		}
		repeated = repeated || seen[a.Index]
		seen[a.Index] = true
		all = append(all, c)
	}
	if !repeated {
		return [][]libseccomp.ScmpCondition{all}, nil
	}
	out := make([][]libseccomp.ScmpCondition, len(all))
	for i, c := range all {
		out[i] = []libseccomp.ScmpCondition{c}
	}
	return out, nil
}

func compareOp(op specs.LinuxSeccompOperator) (libseccomp.ScmpCompareOp, error) {
	switch op {
	case specs.OpNotEqual:
		return libseccomp.CompareNotEqual, nil
	case specs.OpLessThan:
		return libseccomp.CompareLess, nil
	case specs.OpLessEqual:
		return libseccomp.CompareLessOrEqual, nil
	case specs.OpEqualTo:
		return libseccomp.CompareEqual, nil
	case specs.OpGreaterEqual:
		return libseccomp.CompareGreaterEqual, nil
	case specs.OpGreaterThan:
		return libseccomp.CompareGreater, nil
	case specs.OpMaskedEqual:
		return libseccomp.CompareMaskedEqual, nil
	}
	return 0, fmt.Errorf("unknown comparison %q: %w", op, errdefs.ErrInvalidArgument)
}

func action(a specs.LinuxSeccompAction, errnoRet *uint) (libseccomp.ScmpAction, error) {
	ret := int16(unix.EPERM)
	if errnoRet != nil {
		ret = int16(*errnoRet)
	}
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return libseccomp.ActKillThread, nil
	case specs.ActKillProcess:
		return libseccomp.ActKillProcess, nil
	case specs.ActTrap:
		return libseccomp.ActTrap, nil
	case specs.ActErrno:
		return libseccomp.ActErrno.SetReturnCode(ret), nil
	case specs.ActTrace:
		return libseccomp.ActTrace.SetReturnCode(ret), nil
	case specs.ActAllow:
		return libseccomp.ActAllow, nil
	case specs.ActLog:
		return libseccomp.ActLog, nil
	case specs.ActNotify:
		return libseccomp.ActNotify, nil
	}
	return 0, fmt.Errorf("unknown action %q: %w", a, errdefs.ErrInvalidArgument)
}

// exportProgram generates f's program and the flags libseccomp would
// load it with: the profile's log, spec-allow and wait-killable bits, and
// a listener when a rule notifies. Never TSYNC: the filter is for the
// thread that execs, like libseccomp's default.
func exportProgram(f *libseccomp.ScmpFilter, notifies bool) (*security.SeccompProgram, error) {
	mem, err := unix.MemfdCreate("tupper-seccomp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("seccomp: memfd: %w", err)
	}
	file := os.NewFile(uintptr(mem), "tupper-seccomp")
	defer file.Close()
	if err := f.ExportBPF(file); err != nil {
		return nil, fmt.Errorf("seccomp: generate the program: %w", err)
	}
	filter, err := io.ReadAll(io.NewSectionReader(file, 0, security.MaxSeccompProgramSize+unix.SizeofSockFilter))
	if err != nil {
		return nil, fmt.Errorf("seccomp: read the program: %w", err)
	}
	flags, err := filterFlags(f, notifies)
	if err != nil {
		return nil, err
	}
	p := &security.SeccompProgram{Filter: filter, Flags: flags}
	return p, p.Check()
}

// filterFlags reads the bits libseccomp keeps beside the rules. Each getter
// exists only from some API level on, as the setters do.
func filterFlags(f *libseccomp.ScmpFilter, notifies bool) (uint, error) {
	api, _ := libseccomp.GetAPI()
	var flags uint
	bits := []struct {
		minAPI uint
		get    func() (bool, error)
		flag   uint
	}{
		{3, f.GetLogBit, unix.SECCOMP_FILTER_FLAG_LOG},
		{4, f.GetSSB, unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW},
		{7, f.GetWaitKill, unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV},
	}
	for _, b := range bits {
		if api < b.minAPI {
			continue
		}
		on, err := b.get()
		if err != nil {
			return 0, fmt.Errorf("seccomp: filter flag %#x: %w", b.flag, err)
		}
		if on {
			flags |= b.flag
		}
	}
	if notifies {
		flags |= unix.SECCOMP_FILTER_FLAG_NEW_LISTENER
	} else if flags&unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0 {
		return 0, fmt.Errorf("linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a rule with SCMP_ACT_NOTIFY: %w", errdefs.ErrInvalidArgument)
	}
	return flags, nil
}

// Features describes what Compile accepts, for the runtime's
// features report.
func Features() *features.Seccomp {
	yes := true
	return &features.Seccomp{
		Enabled: &yes,
		Actions: []string{string(specs.ActKill), string(specs.ActKillProcess), string(specs.ActKillThread), string(specs.ActTrap),
			string(specs.ActErrno), string(specs.ActTrace), string(specs.ActAllow), string(specs.ActLog), string(specs.ActNotify)},
		Operators: []string{string(specs.OpNotEqual), string(specs.OpLessThan), string(specs.OpLessEqual), string(specs.OpEqualTo),
			string(specs.OpGreaterEqual), string(specs.OpGreaterThan), string(specs.OpMaskedEqual)},
		Archs: []string{string(specs.ArchX86), string(specs.ArchX86_64), string(specs.ArchX32), string(specs.ArchARM),
			string(specs.ArchAARCH64), string(specs.ArchMIPS), string(specs.ArchMIPS64), string(specs.ArchMIPS64N32),
			string(specs.ArchMIPSEL), string(specs.ArchMIPSEL64), string(specs.ArchMIPSEL64N32), string(specs.ArchPPC),
			string(specs.ArchPPC64), string(specs.ArchPPC64LE), string(specs.ArchS390), string(specs.ArchS390X), string(specs.ArchRISCV64)},
		KnownFlags:     []string{string(specs.LinuxSeccompFlagLog), string(specs.LinuxSeccompFlagSpecAllow), string(specs.LinuxSeccompFlagWaitKillableRecv)},
		SupportedFlags: []string{string(specs.LinuxSeccompFlagLog), string(specs.LinuxSeccompFlagSpecAllow), string(specs.LinuxSeccompFlagWaitKillableRecv)},
	}
}

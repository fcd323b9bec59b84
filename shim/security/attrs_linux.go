package security

import (
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Process attributes the spec may carry besides credentials: execution
// domain (personality), I/O priority and CPU scheduling. Each applies to the
// calling thread and carries over execve.

// Personality values from <linux/personality.h>.
const (
	perLinux   = 0x0000
	perLinux32 = 0x0008
)

// CheckAttrs validates what ApplyAttrs would apply, for a clear error at Create.
func CheckAttrs(spec *specs.Spec) error {
	if spec.Linux != nil && spec.Linux.Personality != nil {
		if _, err := personality(spec.Linux.Personality); err != nil {
			return err
		}
	}
	if p := spec.Process; p != nil {
		if p.IOPriority != nil {
			if _, err := ioprio(p.IOPriority); err != nil {
				return err
			}
		}
		if p.Scheduler != nil {
			if _, err := schedAttr(p.Scheduler); err != nil {
				return err
			}
		}
	}
	return nil
}

// ApplyAttrs sets personality (from linux.personality), ioPriority and
// scheduler (from the process).
func ApplyAttrs(pers *specs.LinuxPersonality, p *specs.Process) error {
	if pers != nil {
		v, err := personality(pers)
		if err != nil {
			return err
		}
		if _, _, errno := unix.Syscall(unix.SYS_PERSONALITY, v, 0, 0); errno != 0 {
			return fmt.Errorf("setting personality %s: %w", pers.Domain, errno)
		}
	}
	if p.IOPriority != nil {
		v, err := ioprio(p.IOPriority)
		if err != nil {
			return err
		}
		const ioprioWhoProcess = 1
		if _, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, 0, v); errno != 0 {
			return fmt.Errorf("setting I/O priority %s/%d: %w", p.IOPriority.Class, p.IOPriority.Priority, errno)
		}
	}
	if p.Scheduler != nil {
		attr, err := schedAttr(p.Scheduler)
		if err != nil {
			return err
		}
		if err := unix.SchedSetAttr(0, attr, 0); err != nil {
			return fmt.Errorf("setting scheduler %s: %w", p.Scheduler.Policy, err)
		}
	}
	return nil
}

func personality(p *specs.LinuxPersonality) (uintptr, error) {
	var v uintptr
	switch p.Domain {
	case specs.PerLinux:
		v = perLinux
	case specs.PerLinux32:
		v = perLinux32
	default:
		return 0, fmt.Errorf("linux.personality.domain %q is not LINUX or LINUX32: %w", p.Domain, errdefs.ErrInvalidArgument)
	}
	if len(p.Flags) > 0 {
		return 0, fmt.Errorf("linux.personality.flags %v: no flags are defined yet: %w", p.Flags, errdefs.ErrInvalidArgument)
	}
	return v, nil
}

func ioprio(p *specs.LinuxIOPriority) (uintptr, error) {
	classes := map[specs.IOPriorityClass]uintptr{specs.IOPRIO_CLASS_RT: 1, specs.IOPRIO_CLASS_BE: 2, specs.IOPRIO_CLASS_IDLE: 3}
	class, ok := classes[p.Class]
	if !ok {
		return 0, fmt.Errorf("process.ioPriority.class %q is unknown: %w", p.Class, errdefs.ErrInvalidArgument)
	}
	if p.Priority < 0 || p.Priority > 7 {
		return 0, fmt.Errorf("process.ioPriority.priority %d is not 0-7: %w", p.Priority, errdefs.ErrInvalidArgument)
	}
	return class<<13 | uintptr(p.Priority), nil
}

func schedAttr(s *specs.Scheduler) (*unix.SchedAttr, error) {
	policies := map[specs.LinuxSchedulerPolicy]uint32{
		specs.SchedOther: 0, specs.SchedFIFO: 1, specs.SchedRR: 2, specs.SchedBatch: 3,
		specs.SchedISO: 4, specs.SchedIdle: 5, specs.SchedDeadline: 6,
	}
	policy, ok := policies[s.Policy]
	if !ok {
		return nil, fmt.Errorf("process.scheduler.policy %q is unknown: %w", s.Policy, errdefs.ErrInvalidArgument)
	}
	flagBits := map[specs.LinuxSchedulerFlag]uint64{
		specs.SchedFlagResetOnFork: 0x01, specs.SchedFlagReclaim: 0x02, specs.SchedFlagDLOverrun: 0x04,
		specs.SchedFlagKeepPolicy: 0x08, specs.SchedFlagKeepParams: 0x10, specs.SchedFlagUtilClampMin: 0x20,
		specs.SchedFlagUtilClampMax: 0x40,
	}
	attr := &unix.SchedAttr{Policy: policy, Nice: s.Nice, Priority: uint32(s.Priority), Runtime: s.Runtime, Deadline: s.Deadline, Period: s.Period}
	for _, f := range s.Flags {
		bit, ok := flagBits[f]
		if !ok {
			return nil, fmt.Errorf("process.scheduler.flags: %q is unknown: %w", f, errdefs.ErrInvalidArgument)
		}
		attr.Flags |= bit
	}
	return attr, nil
}

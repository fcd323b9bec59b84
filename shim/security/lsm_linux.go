package security

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// AnnotationLSMOptional, set to "true", lets a container whose spec asks for
// an AppArmor profile or SELinux label start on a host without that LSM. The
// label is then not applied and the log says so. Without it such a spec is
// refused: a confinement the spec asked for is never dropped silently.
const AnnotationLSMOptional = "io.containerd.tupper.v2.lsm-optional"

// AppArmorEnabled reports whether the host enforces AppArmor.
func AppArmorEnabled() bool {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && strings.HasPrefix(string(b), "Y")
}

// SELinuxEnabled reports whether the host runs SELinux.
func SELinuxEnabled() bool {
	_, err := os.Stat("/sys/fs/selinux/enforce")
	return err == nil
}

// LSM is what the process's exec must be labelled with.
type LSM struct {
	AppArmorProfile string
	SELinuxLabel    string
}

// PlanLSM decides, at Create, which labels are applied. Each label the host
// cannot apply is refused, or skipped with a log line when the spec allows.
func PlanLSM(ctx context.Context, spec *specs.Spec) (LSM, error) {
	var plan LSM
	if spec.Process == nil {
		return plan, nil
	}
	optional := spec.Annotations[AnnotationLSMOptional] == "true"
	check := func(kind, label string, enabled bool, dst *string) error {
		switch {
		case label == "":
		case enabled:
			*dst = label
		case optional:
			log.G(ctx).WithField(strings.ToLower(kind), label).Warnf("%s is not enabled on this host: the container runs without its %s label (%s=true)", kind, kind, AnnotationLSMOptional)
		default:
			return fmt.Errorf("the spec asks for %s label %q but %s is not enabled on this host; set annotation %s=true to run without it: %w",
				kind, label, kind, AnnotationLSMOptional, errdefs.ErrFailedPrecondition)
		}
		return nil
	}
	if err := check("AppArmor", spec.Process.ApparmorProfile, AppArmorEnabled(), &plan.AppArmorProfile); err != nil {
		return plan, err
	}
	if err := check("SELinux", spec.Process.SelinuxLabel, SELinuxEnabled(), &plan.SELinuxLabel); err != nil {
		return plan, err
	}
	if !AppArmorEnabled() && !SELinuxEnabled() {
		log.G(ctx).Debug("no AppArmor or SELinux on this host: LSM labelling skipped")
	}
	return plan, nil
}

// ApplyOnExec labels the next execve of the calling thread: the kernel
// switches profile or context as the program starts.
func (l LSM) ApplyOnExec() error {
	if l.AppArmorProfile != "" {
		if err := writeAttr("apparmor/exec", "exec "+l.AppArmorProfile); err != nil {
			return fmt.Errorf("AppArmor profile %s: %w", l.AppArmorProfile, err)
		}
	}
	if l.SELinuxLabel != "" {
		if err := writeAttr("exec", l.SELinuxLabel); err != nil {
			return fmt.Errorf("SELinux label %s: %w", l.SELinuxLabel, err)
		}
	}
	return nil
}

// writeAttr writes the calling thread's /proc attr file.
func writeAttr(name, value string) error {
	err := writeProcThreadSelf("attr/"+name, value)
	if name == "apparmor/exec" && errors.Is(err, os.ErrNotExist) {
		err = writeProcThreadSelf("attr/exec", value) // kernels before the LSM stacking interface
	}
	return err
}

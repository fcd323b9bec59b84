package container

import (
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/shim/security"
	"golang.org/x/sys/unix"
)

// alongside runs a Create's Options.Alongside: in the background from the
// moment the init helper exists, overlapping the helper's own start-up and
// its rootfs, when that is safe; else once the helper is Ready, as the
// last step of Create.
type alongside struct {
	fn    func(netns string) error
	pid   int          // the init helper
	alive func() error // whether the helper is still this process's unreaped child
	netns *os.File     // the helper's network namespace, held while fn may run
	done  chan error   // set when fn runs in the background
}

// startEarly starts fn now if that is safe. fn works on the helper's
// network namespace, which must already be the container's: one that
// clone made, not one the helper's constructor will unshare after joining
// a user namespace (until then the helper is in the caller's). And nothing
// the helper does before Ready may depend on fn's work or change what fn
// does: no OCI hook that runs by then, and no net.* sysctl (one naming
// eth0, or turning IPv6 off, would otherwise see fn's work half done, by
// chance).
func (a *alongside) startEarly(plan *nsPlan, spec *specs.Spec) error {
	if a.fn == nil || plan.clone&unix.CLONE_NEWNET == 0 || hasHooksBeforeReady(spec) || hasNetSysctls(spec) {
		return nil
	}
	if err := a.hold(); err != nil {
		return err
	}
	a.done = make(chan error, 1)
	path := a.path()
	go func() { a.done <- a.fn(path) }()
	return nil
}

// finish waits for fn started early; otherwise it runs fn now if the
// helper got to Ready (its namespaces are final then). Then it lets go of
// the namespace.
func (a *alongside) finish(ready bool) error {
	switch {
	case a.done != nil:
		defer a.netns.Close()
		return <-a.done
	case a.fn == nil || !ready:
		return nil
	}
	if err := a.hold(); err != nil {
		return err
	}
	defer a.netns.Close()
	return a.fn(a.path())
}

// hold opens the helper's network namespace, and then checks that the
// helper was not reaped meanwhile: fn gets the namespace through this
// file, and a pid freed by a helper that died could have led into another
// process's. (A helper that exited but is not reaped yet has no namespace
// links to open.)
func (a *alongside) hold() error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", a.pid))
	if err == nil {
		if err = a.alive(); err != nil {
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("the init helper's network namespace: %w", err)
	}
	a.netns = f
	return nil
}

func (a *alongside) path() string { return fmt.Sprintf("/proc/self/fd/%d", a.netns.Fd()) }

// hasHooksBeforeReady reports whether spec has hooks that run while the
// init helper is being built (the ones Create runs).
func hasHooksBeforeReady(spec *specs.Spec) bool {
	h := spec.Hooks
	//nolint:staticcheck // Prestart is deprecated in the spec, and still run.
	return h != nil && len(h.Prestart)+len(h.CreateRuntime)+len(h.CreateContainer) > 0
}

// hasNetSysctls reports whether spec sets sysctls of the network namespace.
func hasNetSysctls(spec *specs.Spec) bool {
	for k := range spec.Linux.Sysctl {
		if security.SysctlNamespace(k) == specs.NetworkNamespace {
			return true
		}
	}
	return false
}

package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// makeNetns makes the Env's network namespace (Options.Netns), bind-mounted
// on Dir/netns so that it outlives the thread that made it, with lo up.
// cleanup's unmountAll removes the mount once the daemons and shims are
// gone, and the namespace goes with it: bridges, iptables rules and
// sysctls such as ip_forward that anything set in it never touch the host.
func (e *Env) makeNetns(t testing.TB) {
	t.Helper()
	path := filepath.Join(e.Dir, "netns")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, now in the new namespace, ends with
		// this goroutine instead of going back to the scheduler's pool.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatalf("the test's network namespace: %v", err)
	}
	e.Netns = path
	if out, err := e.Command(context.Background(), "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in the test's network namespace: %v: %s", err, out)
	}
}

// inNetns is the program and arguments that run name with args inside the
// Env's network namespace, when it has one.
func (e *Env) inNetns(name string, args ...string) (string, []string) {
	if e.Netns == "" {
		return name, args
	}
	return "nsenter", append([]string{"--net=" + e.Netns, "--", name}, args...)
}

// Command is a host program run as the Env's daemons run: with their
// PATH, and inside the Env's network namespace if it has one, so that it
// sees the network containerd and the shims see (nerdctl, whose port
// checks and CNI setup must happen there; a client of a published port).
func (e *Env) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	bin, argv := e.inNetns(name, args...)
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Env = e.daemonEnv()
	return cmd
}

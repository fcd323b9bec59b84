// tupper-run runs an OCI bundle in the foreground with tupper's container
// package, without containerd: a tool for trying specs by hand and the
// start of a runc-like CLI.
//
//	tupper-run [-id ID] [-no-pivot] [-systemd-cgroup] [BUNDLE]
//
// It creates the container in its cgroup (linux.cgroupsPath, with the
// spec's resources; removed at the end), starts it, forwards signals to
// it, copies a terminal when process.terminal is set, and exits with its
// status.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/containerd/console"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/tupper/tupper/shim/cgroups"
	"github.com/tupper/tupper/shim/container"
	"github.com/tupper/tupper/shim/seccomp"
	// Joins of user and time namespaces, before the Go runtime starts.
	_ "github.com/tupper/tupper/shim/nsenter"
	"golang.org/x/sys/unix"
)

func main() {
	container.MaybeInit()
	id := flag.String("id", "tupper-run", "container id")
	noPivot := flag.Bool("no-pivot", false, "use MS_MOVE + chroot instead of pivot_root")
	systemd := flag.Bool("systemd-cgroup", false, "linux.cgroupsPath is slice:prefix:name, for the systemd driver")
	flag.Parse()
	bundle := "."
	if flag.NArg() > 0 {
		bundle = flag.Arg(0)
	}
	status, err := run(*id, bundle, *noPivot, *systemd)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tupper-run:", err)
		os.Exit(125)
	}
	os.Exit(status)
}

func run(id, bundle string, noPivot, systemd bool) (int, error) {
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return 0, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return 0, fmt.Errorf("config.json: %w", err)
	}
	// Forward signals from the moment the container exists.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs)
	defer signal.Stop(sigs)
	cg, err := cgroups.NewPlacement(context.Background(), id, &spec, systemd)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err := cg.Remove(); err != nil {
			fmt.Fprintln(os.Stderr, "tupper-run:", err)
		}
	}()
	c, err := container.Create(container.Options{
		ID: id, Bundle: bundle, Spec: &spec, NoPivotRoot: noPivot,
		Stdio:   container.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr},
		Cgroup:  cg,
		Seccomp: seccomp.NewCache(seccomp.DefaultCacheDir),
	})
	if err != nil {
		return 0, err
	}
	init := c.Init()
	if master := init.Console(); master != nil {
		detach, err := attach(master)
		if err != nil {
			init.Signal(unix.SIGKILL)
			init.Wait()
			return 0, err
		}
		defer detach()
	}
	if err := c.Start(); err != nil {
		init.Wait()
		return 0, err
	}
	go func() {
		for s := range sigs {
			sig := s.(syscall.Signal)
			if sig == unix.SIGCHLD || sig == unix.SIGWINCH || sig == unix.SIGURG || sig == unix.SIGPIPE {
				continue
			}
			init.Signal(sig)
		}
	}()
	st, _, err := init.Wait()
	return st, err
}

// attach puts our terminal in raw mode and copies it to and from the
// container's pty, following window size changes. It returns a function
// that waits for the output to drain and restores the terminal.
func attach(master *os.File) (func(), error) {
	pty, err := console.ConsoleFromFile(master)
	if err != nil {
		return nil, err
	}
	reset := func() {}
	if cur, err := console.ConsoleFromFile(os.Stdin); err == nil {
		if err := cur.SetRaw(); err == nil {
			reset = func() { cur.Reset() }
		}
		if sz, err := cur.Size(); err == nil {
			pty.Resize(sz)
		}
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, unix.SIGWINCH)
		go func() {
			for range winch {
				if sz, err := cur.Size(); err == nil {
					pty.Resize(sz)
				}
			}
		}()
	}
	go io.Copy(master, os.Stdin)
	done := make(chan struct{})
	go func() { io.Copy(os.Stdout, master); close(done) }()
	return func() { <-done; reset() }, nil
}

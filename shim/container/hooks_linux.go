package container

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RunHooks runs OCI hooks in order, each with the container state as JSON
// on its stdin, and stops at the first failure. start is how the hook
// process is started and waited for (a shim passes its reaper's).
//
// Where each kind runs, following the runtime spec's lifecycle:
//   - prestart, createRuntime: by Create, in the runtime's namespaces,
//     after the container's namespaces and mounts exist, before pivot_root;
//   - createContainer: by the init helper, in the container's namespaces
//     before pivot_root (so the path resolves in the runtime's root);
//   - startContainer: by the init helper after Start, inside the
//     container, right before the program is exec'd;
//   - poststart, poststop: by the caller (the shim) after Start and at
//     Delete; their failures are only warnings.
func RunHooks(hooks []specs.Hook, state *specs.State, start Starter) error {
	for i, h := range hooks {
		if err := runHook(h, state, start); err != nil {
			return fmt.Errorf("hook #%d (%s): %w", i, h.Path, err)
		}
	}
	return nil
}

// RunHooksWarn runs every hook even when some fail, as poststart and
// poststop hooks must, and returns the failures.
func RunHooksWarn(hooks []specs.Hook, state *specs.State, start Starter) []error {
	var errs []error
	for i, h := range hooks {
		if err := runHook(h, state, start); err != nil {
			errs = append(errs, fmt.Errorf("hook #%d (%s): %w", i, h.Path, err))
		}
	}
	return errs
}

func runHook(h specs.Hook, state *specs.State, start Starter) error {
	if start == nil {
		start = DefaultStarter
	}
	st, err := json.Marshal(state)
	if err != nil {
		return err
	}
	// Plain pipes we own: os/exec's copying goroutines would need
	// cmd.Wait, which a reaper-based Starter never calls.
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer inR.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		inW.Close()
		return err
	}
	defer outR.Close()
	args := h.Args
	if len(args) == 0 {
		args = []string{h.Path}
	}
	env := h.Env
	if env == nil {
		env = []string{} // never the runtime's own environment
	}
	cmd := &exec.Cmd{Path: h.Path, Args: args, Env: env, Stdin: inR, Stdout: outW, Stderr: outW}
	wait, err := start(cmd)
	outW.Close()
	if err != nil {
		inW.Close()
		return err
	}
	// State JSON is small; write it in the background in case the hook
	// never reads its stdin.
	go func() { inW.Write(st); inW.Close() }()
	outC := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(outR, 64<<10))
		io.Copy(io.Discard, outR)
		outC <- strings.TrimSpace(string(b))
	}()
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() { s, err := wait(); cmd.Process.Release(); done <- result{s, err} }()
	var timeout <-chan time.Time
	if h.Timeout != nil {
		if *h.Timeout <= 0 {
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("invalid timeout %d", *h.Timeout)
		}
		timeout = time.After(time.Duration(*h.Timeout) * time.Second)
	}
	select {
	case r := <-done:
		out := <-outC
		if r.err != nil {
			return r.err
		}
		if r.status != 0 {
			return fmt.Errorf("exit status %d: %s", r.status, out)
		}
		return nil
	case <-timeout:
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("timed out after %ds", *h.Timeout)
	}
}

// State returns the OCI state of the container with the given status.
func (c *Container) State(status specs.ContainerState) *specs.State {
	return &specs.State{
		Version:     specs.Version,
		ID:          c.ID,
		Status:      status,
		Pid:         c.init.pid,
		Bundle:      c.Bundle,
		Annotations: c.spec.Annotations,
	}
}

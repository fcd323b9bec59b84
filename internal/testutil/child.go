package testutil

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// A test that must change what cannot be undone in its own process
// (capabilities, a seccomp filter) re-executes its test binary as a child:
// TestMain calls ChildMain first, and the test runs the child with
// ChildCommand or RunChild, passing a configuration as JSON in env.

// childSetupFailed is the exit status of a child whose setup failed, as
// opposed to the program it went on to run.
const childSetupFailed = 120

// DefaultCaps is containerd's default capability list for a container
// (its pkg/oci).
var DefaultCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}

// ChildMain runs child with the configuration in env and exits, when this
// process is such a child; otherwise it returns at once. child returns only
// on failure (it ends by exec'ing the program to test); env is unset
// before it runs.
func ChildMain(env string, child func(config []byte) error) {
	cfg, ok := os.LookupEnv(env)
	if !ok {
		return
	}
	os.Unsetenv(env)
	err := child([]byte(cfg))
	fmt.Fprintln(os.Stderr, "child:", err)
	os.Exit(childSetupFailed)
}

// ChildCommand is the test binary as a child with cfg in env.
func ChildCommand(env string, cfg any) *exec.Cmd {
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), env+"="+string(b))
	return cmd
}

// RunChild runs the test binary as a child with cfg in env and returns its
// output; a child whose setup failed fails the test.
func RunChild(t testing.TB, env string, cfg any) string {
	t.Helper()
	out, err := ChildCommand(env, cfg).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == childSetupFailed {
		t.Fatalf("child setup failed: %s", out)
	}
	return string(out)
}

// RerunTest runs the calling test again, alone, in a new process of the
// test binary with env set to value, and returns its output. The test sees
// value in env there and does the part that needs a process in which
// nothing has run yet (a cache or a once-per-process value still cold).
func RerunTest(t testing.TB, env, value string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env+"="+value)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s=%s: %v: %s", env, value, err, out)
	}
	return string(out)
}

package clients

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"
)

// runner drives nerdctl for one runtime, in a containerd namespace of its
// own, so that names, volumes and prune see only that runtime's objects.
type runner struct {
	e       *env
	name    string // "runc" or "tupper"
	runtime string
	ns      string
	log     strings.Builder // the transcript the two runtimes must share
}

func (e *env) runners() []*runner {
	return []*runner{
		{e: e, name: "runc", runtime: runcRuntime, ns: e.Namespace + "-runc"},
		{e: e, name: "tupper", runtime: tupperRuntime, ns: e.Namespace + "-tupper"},
	}
}

// result is what a user sees of one nerdctl command.
type result struct {
	Out, Err string
	Code     int
}

// globalArgs are nerdctl's flags for this test's containerd, namespace,
// state and CNI; every image is on the Env's snapshotter (tupper's) for
// both runtimes, so only the runtime differs.
func (r *runner) globalArgs() []string {
	return []string{"--address", r.e.Address, "--namespace", r.ns, "--data-root", filepath.Join(r.e.Dir, "nerdctl"),
		"--cni-netconfpath", filepath.Join(r.e.Dir, "cni"), "--cni-path", "/usr/lib/cni", "--snapshotter", r.e.Snapshotter}
}

// withRuntime adds --runtime to run and create.
func (r *runner) withRuntime(args []string) []string {
	if len(args) > 0 && (args[0] == "run" || args[0] == "create") {
		return append([]string{args[0], "--runtime", r.runtime}, args[1:]...)
	}
	return args
}

// command is nerdctl with args, inside the test's network namespace (the
// port checks of -p and the CNI hooks see that namespace, as containerd's).
func (r *runner) command(ctx context.Context, args []string) *exec.Cmd {
	cmd := r.e.Command(ctx, "nerdctl", append(r.globalArgs(), r.withRuntime(args)...)...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// nerdctl runs a command without stdin.
func (r *runner) nerdctl(args ...string) result { return r.nerdctlIn("", args...) }

// nerdctlIn runs a command with stdin.
func (r *runner) nerdctlIn(stdin string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := r.command(ctx, args)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	return finish(cmd.Run(), out.String(), errb.String())
}

func finish(err error, out, errOut string) result {
	res := result{Out: out, Err: errOut}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	default:
		res.Code = -1
		res.Err += "\n[" + err.Error() + "]"
	}
	return res
}

// nerdctlPty runs a command on a pseudo-terminal of the test's own, as
// from a user's shell. input, if any, is typed once nerdctl has put the
// terminal in raw mode (it attaches then) and the container's shell has
// shown its prompt, as a user would, so that neither the terminal's echo
// nor the shell's redraw on the client's first resize depends on timing.
func (r *runner) nerdctlPty(input string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	master, slavePath, err := console.NewPty()
	if err != nil {
		return result{Err: err.Error(), Code: -1}
	}
	defer master.Close()
	master.Resize(console.WinSize{Height: 24, Width: 80})
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return result{Err: err.Error(), Code: -1}
	}
	cmd := r.command(ctx, args)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		slave.Close()
		return result{Err: err.Error(), Code: -1}
	}
	out := newOutput()
	copied := make(chan struct{})
	go func() {
		io.Copy(out, master) // ends with EIO once every slave fd is closed
		close(copied)
	}()
	if input != "" {
		if waitRaw(ctx, slave) != nil || out.waitFor(ctx, prompt) != nil {
			cancel()
		}
		io.WriteString(master, input)
	}
	slave.Close()
	err = cmd.Wait()
	<-copied
	return finish(err, strings.ReplaceAll(out.String(), "\r", ""), "")
}

// prompt is busybox sh's prompt for root.
const prompt = "/ # "

// output collects what a process writes (a terminal's, a FIFO's) and
// wakes waitFor on each write.
type output struct {
	mu   sync.Mutex
	b    bytes.Buffer
	grew chan struct{}
}

func newOutput() *output { return &output{grew: make(chan struct{}, 1)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	o.b.Write(p)
	o.mu.Unlock()
	select {
	case o.grew <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// waitFor waits until the output contains s, or ctx ends.
func (o *output) waitFor(ctx context.Context, s string) error {
	for !strings.Contains(o.String(), s) {
		select {
		case <-o.grew:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// waitRaw waits until the terminal's echo is off: nerdctl's raw mode.
func waitRaw(ctx context.Context, tty *os.File) error {
	for {
		t, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			return err
		}
		if t.Lflag&unix.ECHO == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// record adds a command and its result to the runner's transcript.
func (r *runner) record(args []string, res result) result {
	fmt.Fprintf(&r.log, "$ nerdctl %s\n%s", strings.Join(args, " "), res.Out)
	if errOut := withoutNoise(res.Err); errOut != "" {
		fmt.Fprintf(&r.log, "[stderr] %s", errOut)
		if !strings.HasSuffix(errOut, "\n") {
			r.log.WriteString("\n")
		}
	}
	fmt.Fprintf(&r.log, "[exit %d]\n", res.Code)
	return res
}

// Do runs a command and records it.
func (r *runner) Do(args ...string) result { return r.record(args, r.nerdctl(args...)) }

// DoIn runs a command with stdin and records it.
func (r *runner) DoIn(stdin string, args ...string) result {
	return r.record(append([]string{"<<<" + fmt.Sprintf("%q", stdin)}, args...), r.nerdctlIn(stdin, args...))
}

// DoPty runs a command on a terminal and records it.
func (r *runner) DoPty(input string, args ...string) result {
	return r.record(append([]string{"[pty]"}, args...), r.nerdctlPty(input, args...))
}

// Note adds a line of the test's own observations to the transcript.
func (r *runner) Note(format string, args ...any) {
	fmt.Fprintf(&r.log, "# "+format+"\n", args...)
}

// Must runs a command that the case needs to succeed on both runtimes; a
// failure is recorded (and so shows as a difference if one runtime
// fails) and reported.
func (r *runner) Must(args ...string) result {
	res := r.Do(args...)
	if res.Code != 0 {
		r.Note("FAILED: nerdctl %s", strings.Join(args, " "))
	}
	return res
}

// withoutNoise drops nerdctl's log lines that come and go with timing on
// either runtime: its signal forwarder racing the task's exit.
func withoutNoise(s string) string {
	var keep []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(l, `msg="forward signal child exited"`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// normalizers turn what differs between any two runs (ids, addresses,
// times, durations, sizes that depend on timing) into placeholders.
var normalizers = []struct {
	re   *regexp.Regexp
	with string
}{
	// The harness's directory and namespace first: its random part is
	// digits, which the id patterns below could take for hex.
	{regexp.MustCompile(`tupper-it-[0-9]+-(runc|tupper)`), "<ns>"},
	{regexp.MustCompile(`/tmp/tupper-it-[0-9]+`), "<dir>"},
	{regexp.MustCompile(`time="[^"]*"`), `time="<t>"`},
	// busybox's line editor asks the terminal for the cursor position
	// when it starts before the client's first resize: timing, not runtime.
	{regexp.MustCompile("\x1b\\[6n"), ""},
	// ... and redraws its prompt (then erases to the end of the screen)
	// when the client's first resize comes after it printed it: which of
	// the shell's start and nerdctl's resize comes first is timing too.
	{regexp.MustCompile("(/ # )+\x1b\\[J"), "/ # "},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<time>"},
	{regexp.MustCompile(`\b[0-9a-f]{64}\b`), "<id>"},
	{regexp.MustCompile(`\b[0-9a-f]{12}\b`), "<id12>"},
	{regexp.MustCompile(`\b10\.216\.\d+\.\d+\b`), "<ip>"},
	{regexp.MustCompile(`\b([0-9a-f]{2}:){5}[0-9a-f]{2}\b`), "<mac>"},
	{regexp.MustCompile(`tnc[0-9a-f]{6}demo`), "<project>"},
	{regexp.MustCompile(`tnc[0-9a-f]{6}`), "<bridge>"},
	{regexp.MustCompile(`(About a minute|Less than a second|\d+ (seconds|minutes)) ago`), "<ago>"},
	{regexp.MustCompile(`Up (About a minute|Less than a second|\d+ (seconds|minutes))`), "Up <t>"},
	{regexp.MustCompile(`/tmp/compose-[0-9]+`), "<compose-tmp>"},
	{regexp.MustCompile(`\b(bind|cp-in|cp-out|compose|ckpt1|ckpt2)-(runc|tupper)\b`), "$1-<rt>"},
	{regexp.MustCompile(`\b(io\.containerd\.)?(runc|tupper)\.v2\b`), "<runtime>"},
}

func normalize(s string) string {
	s = foldRedraws(s)
	for _, n := range normalizers {
		s = n.re.ReplaceAllString(s, n.with)
	}
	return s
}

// foldRedraws drops busybox's redraw of a line being typed: when the
// client's first resize comes while the test types, the shell prints its
// prompt and the input so far once more, then erases to the end of the
// screen ("/ # echo ty" "/ # echo ty" ESC[J, carriage returns already
// dropped). Whether the resize comes before the prompt, after it or during
// the typing is timing, not runtime; the prompt-only case is one of the
// normalizers.
func foldRedraws(s string) string {
	var b strings.Builder
	for {
		j := strings.Index(s, "\x1b[J")
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		seg := s[strings.LastIndexByte(s[:j], '\n')+1 : j]
		half := len(seg) / 2
		if len(seg)%2 == 0 && strings.HasPrefix(seg, "/ # ") && seg[:half] == seg[half:] {
			b.WriteString(s[:j-half])
		} else {
			b.WriteString(s[:j+len("\x1b[J")])
		}
		s = s[j+len("\x1b[J"):]
	}
}

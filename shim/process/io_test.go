package process

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/tupper/tupper/internal/testutil"
)

func plainStart(cmd *exec.Cmd) (func() (int, error), error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() (int, error) { cmd.Wait(); return cmd.ProcessState.ExitCode(), nil }, nil
}

// runWith runs `sh -c script` with the IO's child ends, like the shim
// does with a container process.
func runWith(t *testing.T, i *IO, script string) {
	t.Helper()
	if err := startWith(t, i, script).Wait(); err != nil {
		t.Fatal(err)
	}
}

// startWith starts script with i's child ends as its stdio.
func startWith(t *testing.T, i *IO, script string) *exec.Cmd {
	t.Helper()
	c := i.ChildStdio()
	cmd := exec.Command("/bin/sh", "-c", script)
	if c.Stdin != nil {
		cmd.Stdin = c.Stdin
	}
	if c.Stdout != nil {
		cmd.Stdout = c.Stdout
	}
	if c.Stderr != nil {
		cmd.Stderr = c.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	i.CloseChildEnds()
	return cmd
}

func mkfifo(t *testing.T, dir, name string) string {
	p := filepath.Join(dir, name)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFifos(t *testing.T) {
	dir := t.TempDir()
	in, out, errp := mkfifo(t, dir, "in"), mkfifo(t, dir, "out"), mkfifo(t, dir, "err")
	// The client side opens its ends in the background, as containerd's
	// does; Create waits until they are open.
	read := func(p string) chan string {
		ch := make(chan string, 1)
		go func() {
			f, _ := os.OpenFile(p, os.O_RDONLY, 0)
			b, _ := io.ReadAll(f)
			ch <- string(b)
		}()
		return ch
	}
	outC, errC := read(out), read(errp)
	i, err := NewIO(context.Background(), "id", "ns", stdio.Stdio{Stdin: in, Stdout: out, Stderr: errp}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	w, err := os.OpenFile(in, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString("from stdin\n")
	w.Close()
	runWith(t, i, "cat; echo to-err >&2")
	if !i.Wait(5 * time.Second) {
		t.Fatal("copies did not finish")
	}
	if got := <-outC; got != "from stdin\n" {
		t.Errorf("stdout %q", got)
	}
	if got := <-errC; got != "to-err\n" {
		t.Errorf("stderr %q", got)
	}
}

func TestCloseStdin(t *testing.T) {
	dir := t.TempDir()
	in := mkfifo(t, dir, "in")
	i, err := NewIO(context.Background(), "id", "ns", stdio.Stdio{Stdin: in}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	w, _ := os.OpenFile(in, os.O_WRONLY, 0) // the client keeps stdin open
	defer w.Close()
	cmd := startWith(t, i, "cat >/dev/null")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	i.CloseStdin()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatal("CloseStdin did not give the process EOF")
	}
}

func TestFileURI(t *testing.T) {
	log := filepath.Join(t.TempDir(), "sub", "log")
	uri := "file://" + log
	i, err := NewIO(context.Background(), "id", "ns", stdio.Stdio{Stdout: uri, Stderr: uri}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	runWith(t, i, "echo out; echo err >&2")
	i.Close()
	b, _ := os.ReadFile(log)
	if string(b) != "out\nerr\n" {
		t.Fatalf("log %q", b)
	}
}

func TestBinaryURI(t *testing.T) {
	dir := t.TempDir()
	logger := filepath.Join(dir, "logger")
	// fd 3 stdout, fd 4 stderr, fd 5 ready; args come from the query.
	os.WriteFile(logger, []byte("#!/bin/sh\nexec 5>&-\ncat <&3 > \"$2\".out & cat <&4 > \"$2\".err & wait\necho \"$CONTAINER_ID $CONTAINER_NAMESPACE\" > \"$2\".env\n"), 0o755)
	base := filepath.Join(dir, "captured")
	uri := "binary://" + logger + "?dest=" + base
	i, err := NewIO(context.Background(), "cid", "cns", stdio.Stdio{Stdout: uri, Stderr: uri}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	runWith(t, i, "echo out; echo err >&2")
	i.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		env, _ := os.ReadFile(base + ".env")
		if strings.TrimSpace(string(env)) == "cid cns" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("logger did not finish (env %q)", env)
		}
		time.Sleep(20 * time.Millisecond)
	}
	o, _ := os.ReadFile(base + ".out")
	e, _ := os.ReadFile(base + ".err")
	if string(o) != "out\n" || string(e) != "err\n" {
		t.Fatalf("out %q err %q", o, e)
	}
}

// A client that opens its end only after Create stopped waiting still gets
// the output: the open goes on in the background and writes wait for it.
func TestFifoClientLate(t *testing.T) {
	defer func(d time.Duration) { fifoOpenWait = d }(fifoOpenWait)
	fifoOpenWait = 200 * time.Millisecond
	out := mkfifo(t, t.TempDir(), "out")
	start := time.Now()
	i, err := NewIO(context.Background(), "id", "ns", stdio.Stdio{Stdout: out}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	if waited := time.Since(start); waited < fifoOpenWait {
		t.Fatalf("Create did not wait for the client (%v)", waited)
	}
	runWith(t, i, "echo late-but-delivered")
	f, err := os.OpenFile(out, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	if string(b) != "late-but-delivered\n" {
		t.Fatalf("late client read %q", b)
	}
}

// A client that never opens its end: Close gives up the pending open, the
// copy of the process' output ends, and the FIFO is left with no opener.
func TestFifoClientNever(t *testing.T) {
	defer func(d time.Duration) { fifoOpenWait = d }(fifoOpenWait)
	fifoOpenWait = 50 * time.Millisecond
	out := mkfifo(t, t.TempDir(), "out")
	i, err := NewIO(context.Background(), "id", "ns", stdio.Stdio{Stdout: out}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	runWith(t, i, "echo nobody-reads")
	closed := make(chan struct{})
	go func() { i.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a FIFO whose client never came")
	}
	if !i.Wait(5 * time.Second) {
		t.Fatal("the output copy did not end after Close")
	}
	// No writer is left: a non-blocking write open finds no reader, and a
	// non-blocking read open followed by a read sees no data and no writer.
	r, err := os.OpenFile(out, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, _ := r.Read(make([]byte, 64)); n != 0 {
		t.Errorf("read %d bytes from a FIFO that nobody should be writing to", n)
	}
}

// With a terminal there is no stderr stream: containerd's clients (ctr,
// nerdctl `run -t`, `exec -t`) make no stderr FIFO but may still name one.
// runc's shim never opens it; neither may tupper, with or without stdin.
func TestTerminalWithoutStderrFifo(t *testing.T) {
	for _, withStdin := range []bool{false, true} {
		dir := t.TempDir()
		s := stdio.Stdio{Terminal: true, Stdout: mkfifo(t, dir, "out"), Stderr: filepath.Join(dir, "never-made-stderr")}
		if withStdin {
			s.Stdin = mkfifo(t, dir, "in")
		}
		outC := make(chan string, 1)
		go func() {
			f, _ := os.OpenFile(s.Stdout, os.O_RDONLY, 0)
			b, _ := io.ReadAll(f)
			outC <- string(b)
		}()
		i, err := NewIO(context.Background(), "id", "ns", s, plainStart)
		if err != nil {
			t.Fatalf("stdin %v: NewIO with a terminal and no stderr FIFO: %v", withStdin, err)
		}
		master, slavePath, err := console.NewPty()
		if err != nil {
			t.Fatal(err)
		}
		m := os.NewFile(master.Fd(), "ptmx")
		if err := i.AttachConsole(m); err != nil {
			t.Fatal(err)
		}
		slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/bin/sh", "-c", "echo on-the-terminal")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		slave.Close()
		if !i.Wait(5 * time.Second) {
			t.Fatal("terminal copy did not finish")
		}
		i.Close()
		if got := <-outC; !strings.Contains(got, "on-the-terminal") {
			t.Errorf("stdin %v: stdout got %q", withStdin, got)
		}
	}
}

// Chown gives the stdio pipes to the I/O owner (runc's IoUid/IoGid) and
// leaves a file:// log's owner alone.
func TestChownPipes(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Require(t, "needs root (fchown to another user)")
	}
	dir := t.TempDir()
	in, out := mkfifo(t, dir, "in"), mkfifo(t, dir, "out")
	go func() { f, _ := os.OpenFile(out, os.O_RDONLY, 0); io.Copy(io.Discard, f) }()
	i, err := NewIO(context.Background(), "id", "ns", stdio.Stdio{Stdin: in, Stdout: out}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	if err := i.Chown(4321, 8765); err != nil {
		t.Fatal(err)
	}
	c := i.ChildStdio()
	for name, f := range map[string]*os.File{"stdin": c.Stdin, "stdout": c.Stdout} {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 4321 || st.Gid != 8765 {
			t.Errorf("%s pipe owned by %d:%d, want 4321:8765", name, st.Uid, st.Gid)
		}
	}
	log := filepath.Join(dir, "log")
	fi, err := NewIO(context.Background(), "id", "ns", stdio.Stdio{Stdout: "file://" + log, Stderr: "file://" + log}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	defer fi.Close()
	if err := fi.Chown(4321, 8765); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Stat(log, &st)
	if st.Uid != 0 {
		t.Errorf("the log file was given to %d", st.Uid)
	}
}

// A resize is ignored, as runc's shim does, for a process without a
// terminal and once the terminal is closed (the process exited and its
// IO was closed): clients resize racing a short process' exit.
func TestResizeWithoutOrAfterTerminal(t *testing.T) {
	plain, err := NewIO(context.Background(), "id", "ns", stdio.Stdio{}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Resize(80, 24); err != nil {
		t.Errorf("resize without a terminal: %v", err)
	}
	i, err := NewIO(context.Background(), "id", "ns", stdio.Stdio{Terminal: true}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	master, _, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	if err := i.AttachConsole(os.NewFile(master.Fd(), "ptmx")); err != nil {
		t.Fatal(err)
	}
	if err := i.Resize(100, 30); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if ws, err := master.Size(); err != nil || ws.Width != 100 || ws.Height != 30 {
		t.Errorf("size %+v, %v", ws, err)
	}
	i.Close()
	if err := i.Resize(80, 24); err != nil {
		t.Errorf("resize after the terminal closed: %v", err)
	}

	// The terminal hangs up before Close: the output copy closes master.
	j, err := NewIO(context.Background(), "id", "ns", stdio.Stdio{Terminal: true, Stdout: "file://" + filepath.Join(t.TempDir(), "log")}, plainStart)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	m2, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	if err := j.AttachConsole(os.NewFile(m2.Fd(), "ptmx")); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	slave.Close()
	if !j.Wait(5 * time.Second) {
		t.Fatal("the terminal copy did not end at hang-up")
	}
	if err := j.Resize(80, 24); err != nil {
		t.Errorf("resize after the terminal hung up: %v", err)
	}
}

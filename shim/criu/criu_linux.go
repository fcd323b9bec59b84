// Package criu drives a CRIU binary through its RPC interface ("criu
// swrk"): one CRIU process per request, on a socket pair, with the
// messages of go-criu's rpc package. It knows CRIU, not containers: what
// to dump and how to restore it is shim/container's business.
//
// go-criu's own client starts CRIU with os/exec and waits with cmd.Wait,
// which would race a shim's subreaper (it reaps every child with
// wait4(-1)); here the caller's Starter starts CRIU, as it starts every
// other child.
package criu

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// MinVersion is the oldest CRIU tupper drives: 4.0 (Debian 12's 3.17
// cannot even check itself on recent kernels, and runc's tests use 4.x).
const MinVersion = 40000

// Starter starts cmd and returns how to wait for it (see
// container.Starter); nil means os/exec.
type Starter func(cmd *exec.Cmd) (wait func() (int, error), err error)

// Client is one CRIU binary.
type Client struct {
	Path    string // absolute path of the criu binary
	Version int    // major*10000 + minor*100 + sublevel
	start   Starter
}

// ErrMissing is wrapped by Find's error when no usable CRIU is installed.
var ErrMissing = errors.New("checkpoint/restore needs CRIU >= 4.0 (criu on the shim's PATH; `make deps` builds 4.2 from ../shared/third_party/criu-v4.2.tar.gz)")

// Find looks up criu on PATH (or path, when not empty) and asks it for its
// version. The error says what is missing: no binary, one that does not
// answer, or one too old.
func Find(path string, start Starter) (*Client, error) {
	if path == "" {
		p, err := exec.LookPath("criu")
		if err != nil {
			return nil, fmt.Errorf("%w: no criu on PATH (%s)", ErrMissing, os.Getenv("PATH"))
		}
		path = p
	}
	c := &Client{Path: path, start: start}
	v, err := c.askVersion()
	if err != nil {
		return nil, fmt.Errorf("%w: %s does not answer its RPC: %v", ErrMissing, path, err)
	}
	if v < MinVersion {
		return nil, fmt.Errorf("%w: %s is version %s", ErrMissing, path, FormatVersion(v))
	}
	c.Version = v
	return c, nil
}

// FormatVersion renders major*10000+minor*100+sublevel as "4.2" or "4.1.1".
func FormatVersion(v int) string {
	s := fmt.Sprintf("%d.%d", v/10000, v/100%100)
	if v%100 != 0 {
		s += fmt.Sprintf(".%d", v%100)
	}
	return s
}

func (c *Client) askVersion() (int, error) {
	t := rpc.CriuReqType_VERSION
	resp, err := c.Call(&rpc.CriuReq{Type: &t}, nil, nil)
	if err != nil {
		return 0, err
	}
	v := resp.GetVersion()
	if v == nil {
		return 0, errors.New("no version in the answer")
	}
	n := int(v.GetMajorNumber()*10000 + v.GetMinorNumber()*100 + v.GetSublevel())
	if v.GetGitid() != "" {
		// A build from git between releases: count it as the next minor,
		// as runc and go-criu do.
		n = n - n%100 + 100
	}
	return n, nil
}

// Hooks are the caller's part of a request, all optional.
type Hooks struct {
	// Started runs once CRIU runs and before it gets the request (a
	// restore's CRIU goes into the container's cgroup here).
	Started func(pid int) error
	// Notify runs for each of CRIU's notifications (its "action
	// scripts": network-lock, post-restore, orphan-pts-master, ...) with
	// the pid it names and any file it passed; CRIU waits meanwhile.
	Notify func(script string, pid int, files []*os.File) error
}

// Call runs one request in a new CRIU process. extra become CRIU's fds 4,
// 5, ... (for inherit-fd and external namespaces). The answer is CRIU's
// final message; a failure is an error with CRIU's own message.
func (c *Client) Call(req *rpc.CriuReq, extra []*os.File, h *Hooks) (*rpc.CriuResp, error) {
	fds, err := unix.Socketpair(unix.AF_LOCAL, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "criu-client"), os.NewFile(uintptr(fds[1]), "criu-server")
	defer theirs.Close()
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)

	cmd := exec.Command(c.Path, "swrk", "3")
	cmd.ExtraFiles = append([]*os.File{theirs}, extra...)
	start := c.start
	if start == nil {
		start = defaultStart
	}
	wait, err := start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", c.Path, err)
	}
	theirs.Close() // a CRIU that dies then shows as EOF
	resp, err := c.converse(uc, cmd.Process.Pid, req, h)
	uc.Close()
	status, werr := wait()
	cmd.Process.Release()
	if err != nil {
		return resp, err
	}
	if werr != nil {
		return resp, werr
	}
	if status != 0 {
		return resp, fmt.Errorf("%s exited with status %d", c.Path, status)
	}
	return resp, nil
}

// converse sends req and answers notifications until the final message.
func (c *Client) converse(uc *net.UnixConn, pid int, req *rpc.CriuReq, h *Hooks) (*rpc.CriuResp, error) {
	if h == nil {
		h = &Hooks{}
	}
	if h.Started != nil {
		if err := h.Started(pid); err != nil {
			return nil, err
		}
	}
	if err := send(uc, req); err != nil {
		return nil, err
	}
	buf, oob := make([]byte, 64<<10), make([]byte, unix.CmsgSpace(4*16))
	for {
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
		if err != nil {
			return nil, fmt.Errorf("read CRIU's answer: %w", err)
		}
		if n == 0 {
			return nil, errors.New("CRIU closed the connection without an answer")
		}
		files, err := receivedFiles(oob[:oobn])
		if err != nil {
			return nil, err
		}
		resp := &rpc.CriuResp{}
		if err := proto.Unmarshal(buf[:n], resp); err != nil {
			closeAll(files)
			return nil, fmt.Errorf("CRIU's answer: %w", err)
		}
		if !resp.GetSuccess() {
			closeAll(files)
			return resp, failure(resp)
		}
		if resp.GetType() != rpc.CriuReqType_NOTIFY {
			closeAll(files)
			return resp, nil
		}
		err = nil
		if h.Notify != nil {
			err = h.Notify(resp.GetNotify().GetScript(), int(resp.GetNotify().GetPid()), files)
		}
		closeAll(files)
		if err != nil {
			return resp, fmt.Errorf("CRIU notification %q: %w", resp.GetNotify().GetScript(), err)
		}
		t := rpc.CriuReqType_NOTIFY
		if err := send(uc, &rpc.CriuReq{Type: &t, NotifySuccess: proto.Bool(true)}); err != nil {
			return nil, err
		}
	}
}

func send(uc *net.UnixConn, req *rpc.CriuReq) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := uc.Write(b); err != nil {
		return fmt.Errorf("send CRIU its request: %w", err)
	}
	return nil
}

func failure(resp *rpc.CriuResp) error {
	msg := strings.TrimSpace(resp.GetCrErrmsg())
	if msg == "" {
		msg = "no message"
	}
	if e := resp.GetCrErrno(); e != 0 {
		return fmt.Errorf("criu %s failed: %s (%v)", strings.ToLower(resp.GetType().String()), msg, unix.Errno(e))
	}
	return fmt.Errorf("criu %s failed: %s", strings.ToLower(resp.GetType().String()), msg)
}

// receivedFiles are the fds CRIU passed with a message (a terminal's
// master with orphan-pts-master).
func receivedFiles(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "criu-passed"))
		}
	}
	return files, nil
}

// closeAll closes the files a notification got; a hook that keeps one
// dups it.
func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

func defaultStart(cmd *exec.Cmd) (func() (int, error), error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() (int, error) {
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), nil
		}
		if err != nil {
			return -1, err
		}
		return 0, nil
	}, nil
}

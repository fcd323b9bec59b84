package security

import (
	"encoding/json"
	"fmt"
	"net"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// SendListenerFd sends the seccomp listener fd of process pid to the
// agent at path, with the container's state and the spec's
// listenerMetadata, as the runtime spec describes.
func SendListenerFd(path, metadata string, fd, pid int, state specs.State) error {
	msg, err := json.Marshal(specs.ContainerProcessState{
		Version:  specs.Version,
		Fds:      []string{specs.SeccompFdName},
		Pid:      pid,
		Metadata: metadata,
		State:    state,
	})
	if err != nil {
		return err
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("seccomp listener %s: %w", path, err)
	}
	defer conn.Close()
	_, _, err = conn.(*net.UnixConn).WriteMsgUnix(msg, unix.UnixRights(fd), nil)
	if err != nil {
		return fmt.Errorf("sending seccomp fd to %s: %w", path, err)
	}
	return nil
}

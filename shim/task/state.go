package task

import (
	"context"
	"os"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	taskAPI "github.com/tupper/tupper/proto/taskapi"
	"github.com/tupper/tupper/shim/process"
)

var statusMap = map[process.Status]task.Status{
	process.Created: task.Status_CREATED,
	process.Running: task.Status_RUNNING,
	process.Paused:  task.Status_PAUSED,
	process.Stopped: task.Status_STOPPED,
	process.Deleted: task.Status_STOPPED,
}

// State reports a process' state.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	snap := p.Snapshot()
	id := p.ID
	if id == "" {
		id = c.ID
	}
	resp := &taskAPI.StateResponse{
		ID:       id,
		Bundle:   c.Bundle,
		Pid:      uint32(snap.Pid),
		Status:   statusMap[snap.Status],
		Stdin:    p.Stdio.Stdin,
		Stdout:   p.Stdio.Stdout,
		Stderr:   p.Stdio.Stderr,
		Terminal: p.Stdio.Terminal,
		ExecID:   p.ID,
	}
	if snap.Status == process.Running && p != c.init && c.paused() {
		resp.Status = task.Status_PAUSED // an exec in a paused container
	}
	// Before the exit the time is the zero time, never left out: a nil
	// timestamp reads as 1970-01-01 in containerd (FromTimestamp), so a
	// running container would show that as its FinishedAt.
	if snap.Status == process.Stopped {
		resp.ExitStatus = uint32(snap.ExitCode)
	}
	resp.ExitedAt = protobuf.ToTimestamp(snap.ExitedAt)
	return resp, nil
}

// Wait blocks until the process has exited.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	select {
	case <-p.Exited():
	case <-ctx.Done():
		return nil, errgrpc.ToGRPC(ctx.Err())
	}
	snap := p.Snapshot()
	return &taskAPI.WaitResponse{ExitStatus: uint32(snap.ExitCode), ExitedAt: protobuf.ToTimestamp(snap.ExitedAt)}, nil
}

// Pids lists the container's processes.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	// Every process of the cgroup when there is one; otherwise those of
	// the container's pid namespace.
	var pids []int
	if m := c.cg.Manager(); m != nil {
		pids, err = m.Pids()
	} else if c.ctr != nil {
		pids, err = c.ctr.Pids()
	}
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	execs := map[int]string{}
	for _, e := range c.execList() {
		if snap := e.Snapshot(); snap.Pid != 0 && snap.Status == process.Running {
			execs[snap.Pid] = e.ID
		}
	}
	seen := map[int]bool{}
	var resp taskAPI.PidsResponse
	add := func(pid int) error {
		if seen[pid] {
			return nil
		}
		seen[pid] = true
		info := &task.ProcessInfo{Pid: uint32(pid)}
		if id, ok := execs[pid]; ok {
			a, err := typeurl.MarshalAnyToProto(&options.ProcessDetails{ExecID: id})
			if err != nil {
				return err
			}
			info.Info = a
		}
		resp.Processes = append(resp.Processes, info)
		return nil
	}
	// Init first, even once it has exited: containerd, reconnecting
	// after a restart, takes a shim that lists no process for a leaked
	// one and kills it, losing the exit status it holds.
	for _, pid := range append([]int{c.init.Snapshot().Pid}, pids...) {
		if pid == 0 {
			continue
		}
		if err := add(pid); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
	}
	// Without a pid namespace of its own, only tracked processes are known.
	for pid := range execs {
		if err := add(pid); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
	}
	return &resp, nil
}

// Connect returns the shim's and the task's pids.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	resp := &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if c, err := s.get(r.ID); err == nil {
		resp.TaskPid = uint32(c.init.Snapshot().Pid)
	}
	return resp, nil
}

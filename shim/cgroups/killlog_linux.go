package cgroups

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// KillLog counts the OOM kills of a container's init from the kernel's
// log, for when its memory.events is gone before the shim could read it.
// With the systemd driver that happens: systemd removes a scope's cgroup
// as soon as its last process dies, and an OOM-killed init takes every
// process of its pid namespace with it; the kernel's rate-limited
// notification of the new oom_kill count may come later still. The kernel
// logs each OOM kill before the victim can die, and the log outlives the
// cgroup.
//
// Only the init's kills are counted: the kernel names every victim by pid
// right after a fixed prefix, which nothing a container controls can
// forge, while the summary line that would tie other victims to a cgroup
// also holds cgroup and process names a container chooses. A process other
// than init that the OOM killer takes leaves the cgroup alive (init is
// still in it), so memory.events still has its count.
type KillLog struct {
	fd    int
	init  []byte // the init's pid in the host's pid namespace, in decimal
	kills uint64
}

// killPrefixes start the kernel's record of an OOM kill: a memory cgroup
// at its limit, the whole machine, or vm.oom_kill_allocating_task.
var killPrefixes = [][]byte{
	[]byte("Memory cgroup out of memory: Killed process "),
	[]byte("Out of memory: Killed process "),
	[]byte("Out of memory (oom_kill_allocating_task): Killed process "),
}

// OpenKillLog starts reading the kernel log at its end, so that only
// kills from now on are seen.
func OpenKillLog(init int) (*KillLog, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open kernel log: %w", err)
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("seek to the end of the kernel log: %w", err)
	}
	return &KillLog{fd: fd, init: []byte(strconv.Itoa(init))}, nil
}

// Kills reads what the kernel logged since the last call and returns how
// many times the OOM killer has killed init since the log was opened (at
// most once, unless a restore gave the pid back).
func (l *KillLog) Kills() (uint64, error) {
	buf := make([]byte, 8192) // a record is at most 8 KiB (CONSOLE_EXT_LOG_MAX)
	for {
		n, err := unix.Read(l.fd, buf)
		switch {
		case errors.Is(err, unix.EPIPE):
			continue // records were overwritten before being read; go on from the oldest left
		case errors.Is(err, unix.EAGAIN):
			return l.kills, nil
		case err != nil:
			return l.kills, fmt.Errorf("read kernel log: %w", err)
		}
		if l.killsInit(buf[:n]) {
			l.kills++
		}
	}
}

// killsInit reads one /dev/kmsg record, "prio,seq,usec,flags[,...];text\n"
// and continuation lines, and reports whether it is the kernel's own
// record (facility 0: a process writing to /dev/kmsg gets another) of an
// OOM kill of init.
func (l *KillLog) killsInit(r []byte) bool {
	head, text, ok := bytes.Cut(r, []byte(";"))
	if !ok {
		return false
	}
	prio, _, _ := bytes.Cut(head, []byte(","))
	if p, err := strconv.Atoi(string(prio)); err != nil || p>>3 != 0 {
		return false
	}
	for _, prefix := range killPrefixes {
		if rest, ok := bytes.CutPrefix(text, prefix); ok {
			pid, _, _ := bytes.Cut(rest, []byte(" "))
			return bytes.Equal(pid, l.init)
		}
	}
	return false
}

// Close stops reading the log.
func (l *KillLog) Close() error { return unix.Close(l.fd) }

// Package bundle keeps the few facts about a container that must outlive
// the shim process, in files of the container's bundle directory: the init
// pid (with its start time, so a recycled pid is never killed) and the
// init's exit status. containerd reads them back through `shim delete`
// (the manager's Stop) when the shim is gone.
package bundle

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	initFile    = "init.pid"
	exitFile    = "exit.json"
	cleanedFile = DeleteResponseFile
)

// DeleteResponseFile is where MarkCleanedUp leaves Delete's reply, for
// shim/nsenter's `shim delete` fast path to print.
const DeleteResponseFile = "delete-response.pb"

// Init identifies the container's init process.
type Init struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

// Exit is the recorded exit of the init process.
type Exit struct {
	Pid      int       `json:"pid"`
	Status   int       `json:"status"`
	ExitedAt time.Time `json:"exitedAt"`
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFile(path, b)
}

// writeFile replaces path with b in one rename: readers see all or nothing.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// WriteInit records the init process of the container in dir.
func WriteInit(dir string, pid int) error {
	st, err := StartTime(pid)
	if err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, initFile), Init{Pid: pid, StartTime: st})
}

// ReadInit returns the recorded init process.
func ReadInit(dir string) (Init, error) {
	var i Init
	b, err := os.ReadFile(filepath.Join(dir, initFile))
	if err != nil {
		return i, err
	}
	return i, json.Unmarshal(b, &i)
}

// WriteExit records the init's exit status.
func WriteExit(dir string, e Exit) error {
	return writeJSON(filepath.Join(dir, exitFile), e)
}

// ReadExit returns the recorded exit status.
func ReadExit(dir string) (Exit, error) {
	var e Exit
	b, err := os.ReadFile(filepath.Join(dir, exitFile))
	if err != nil {
		return e, err
	}
	return e, json.Unmarshal(b, &e)
}

// StartTime returns the start time of pid in clock ticks since boot
// (field 22 of /proc/<pid>/stat).
func StartTime(pid int) (uint64, error) {
	st, _, err := stat(pid)
	return st, err
}

// stat returns the start time and the state letter of pid.
func stat(pid int) (uint64, string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", err
	}
	s := string(b)
	// comm may contain spaces and parentheses: split after the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, "", fmt.Errorf("short /proc/%d/stat", pid)
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, f[0], err
}

// Alive reports whether the recorded init still runs: same pid, same
// start time, and not a zombie waiting for its new parent to reap it.
func (i Init) Alive() bool {
	st, state, err := stat(i.Pid)
	return err == nil && st == i.StartTime && state != "Z" && state != "X"
}

// MarkCleanedUp records that the shim's Delete undid everything the
// container had on the host (rootfs mount, cgroup, network record), so
// `shim delete` has only the exit status left to report. response is that
// report as `shim delete` prints it (a marshalled task DeleteResponse):
// shim/nsenter's constructor prints it without starting Go.
func MarkCleanedUp(dir string, response []byte) error {
	return writeFile(filepath.Join(dir, cleanedFile), response)
}

// CleanedUp reports whether MarkCleanedUp was called for dir.
func CleanedUp(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, cleanedFile))
	return err == nil
}

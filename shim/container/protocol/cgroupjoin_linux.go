package protocol

import "os"

// CgroupJoin is how a helper enters its container's cgroup by itself,
// before it runs code of its own (the first step of the diagram in
// protocol.go). The zero CgroupJoin means it cannot, and the parent moves
// it once it runs. It lives here, not in shim/cgroups, so that the helper's
// binary does not link the cgroup managers.
type CgroupJoin struct {
	// TasksFiles (v1) are the cgroup's "tasks" files, open for reading and
	// writing: the helper writes "0" to each (EnvCgroupFds), then checks
	// it is listed.
	TasksFiles []*os.File
	// Dir (v2) is the cgroup's directory, to clone the helper into
	// (clone3 CLONE_INTO_CGROUP).
	Dir *os.File
}

// Close closes the files; the parent does once the helper has started.
func (j CgroupJoin) Close() {
	for _, f := range j.TasksFiles {
		f.Close()
	}
	if j.Dir != nil {
		j.Dir.Close()
	}
}

package clients

import (
	"strconv"
	"strings"
)

// counter counts in memory and writes each number to /tmp/n; each time it
// starts from the beginning it adds a line to /tmp/starts, which a restore
// from a checkpoint (which goes on in the loop) does not.
const counter = "echo started >> /tmp/starts; i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done"

// count is the counter's last number in container name (-1 if unread).
func (r *runner) count(name string) int {
	n, err := strconv.Atoi(strings.TrimSpace(r.nerdctl("exec", name, "cat", "/tmp/n").Out))
	if err != nil {
		return -1
	}
	return n
}

// checkpointCases are nerdctl's checkpoint commands (CRIU on both
// runtimes), with --net none: the network's part of a restore is the
// shim's own (integration/shim), nerdctl's CNI hooks are not involved.
var checkpointCases = []diffCase{
	{"checkpoint/leave running, kill, start --checkpoint", func(r *runner) {
		r.Must("run", "-d", "--net", "none", "--name", "ck1", image, "sh", "-c", counter)
		r.waitUntil("the counter to pass 5", func() bool { return r.count("ck1") > 5 })
		// Checkpoint names are global to nerdctl's data root: one per runtime.
		r.Do("checkpoint", "create", "--leave-running", "ck1", "ckpt1-"+r.name)
		r.Note("running after the checkpoint: %s", r.state("ck1"))
		saved := r.count("ck1")
		r.Do("kill", "ck1")
		r.waitUntil("ck1 to stop", func() bool { return r.state("ck1") == "exited" })
		r.Do("start", "--checkpoint", "ckpt1-"+r.name, "ck1")
		r.Note("running after the restore: %s", r.state("ck1"))
		r.waitUntil("the restored counter to pass the saved count", func() bool { return r.count("ck1") > saved })
		r.Do("exec", "ck1", "cat", "/tmp/starts")
		r.Do("rm", "-f", "ck1")
	}},
	// nerdctl v2.3.5 sends the checkpoint's exit option only to a runtime
	// named io.containerd.runc.v2 (pkg/cmd/checkpoint/create.go); any
	// other runtime gets no options, which means leave running, as runc's
	// shim also reads no options. knownDifferences has the entry.
	{"checkpoint/create without --leave-running", func(r *runner) {
		r.Must("run", "-d", "--net", "none", "--name", "ck2", image, "sh", "-c", counter)
		r.waitUntil("the counter to pass 5", func() bool { return r.count("ck2") > 5 })
		r.Do("checkpoint", "create", "ck2", "ckpt2-"+r.name)
		r.waitUntil("ck2 to settle", func() bool { s := r.state("ck2"); return s == "exited" || s == "running" })
		r.Note("after the checkpoint: %s", r.state("ck2"))
		r.Do("rm", "-f", "ck2")
	}},
}

func init() { cases = append(cases, checkpointCases...) }

package clients

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// knownDifferences are cases where tupper still differs from runc, each
// with its reason. The test checks that each still differs, so an entry
// that a fix made obsolete fails until it is removed.
var knownDifferences = map[string]string{
	"checkpoint/create without --leave-running": "nerdctl sets the checkpoint's exit option for io.containerd.runc.v2 only; " +
		"tupper gets no options and, as runc's shim would, leaves the container running (use --leave-running and stop it)",
}

// diffCase is a scenario run once on each runtime: the two transcripts,
// normalised, must be equal.
type diffCase struct {
	name string
	run  func(r *runner)
}

// TestNerdctlDifferential runs every case with runc, then with tupper.
func TestNerdctlDifferential(t *testing.T) {
	e := newEnv(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs []string
			for _, r := range e.runners() {
				c.run(r)
				r.clean()
				logs = append(logs, normalize(r.log.String()))
			}
			compare(t, c.name, logs[0], logs[1])
		})
	}
}

func compare(t *testing.T, name, runc, tupper string) {
	t.Helper()
	reason, known := knownDifferences[name]
	switch {
	case runc == tupper && known:
		t.Errorf("listed as a known difference (%s), but tupper now does what runc does: remove it from knownDifferences\n%s", reason, runc)
	case runc == tupper:
		t.Logf("same on both runtimes:\n%s", runc)
	case known:
		t.Logf("known difference: %s\n%s", reason, sideBySide(runc, tupper))
	default:
		t.Errorf("tupper differs from runc:\n%s", sideBySide(runc, tupper))
	}
}

// sideBySide shows both transcripts as one, lines only runc printed marked
// "-r", lines only tupper printed "+t" (a longest-common-subsequence diff).
func sideBySide(a, b string) string {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	// lcs[i][j]: length of the LCS of x[i:] and y[j:].
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var s strings.Builder
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			fmt.Fprintf(&s, "   %s\n", x[i])
			i, j = i+1, j+1
		case j == len(y) || (i < len(x) && lcs[i+1][j] >= lcs[i][j+1]):
			fmt.Fprintf(&s, "-r %s\n", x[i])
			i++
		default:
			fmt.Fprintf(&s, "+t %s\n", y[j])
			j++
		}
	}
	return s.String()
}

// clean removes whatever a case left in the runner's namespace.
func (r *runner) clean() {
	if ids := r.e.containerIDs(r.ns); len(ids) > 0 {
		r.nerdctl(append([]string{"rm", "-f"}, ids...)...)
	}
	r.nerdctl("volume", "prune", "-a", "-f")
}

// waitUntil polls cond (a condition, not a delay) for up to 30 s and
// notes in the transcript whether it came true.
func (r *runner) waitUntil(what string, cond func() bool) bool {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.Note("TIMED OUT waiting for %s", what)
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// state is a container's status as inspect reports it.
func (r *runner) state(name string) string {
	return strings.TrimSpace(r.nerdctl("inspect", "-f", "{{.State.Status}}", name).Out)
}

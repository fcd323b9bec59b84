package process

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/tupper/tupper/shim/container"
)

// noop starts nothing: these tests drive the state machine alone.
func noop() (*container.Process, *IO, error) { return nil, nil, nil }

func TestStateMachine(t *testing.T) {
	p := New("e1", stdio.Stdio{}, nil)
	if s := p.Snapshot(); s.Status != Created || !s.ExitedAt.IsZero() {
		t.Fatal(s)
	}
	if err := p.Kill(9, nil); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("kill before start: %v", err)
	}
	var events []string
	report := func(e string) func() { return func() { events = append(events, e) } }
	if _, err := p.Start(noop, func(int) { events = append(events, "start") }); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Start(noop, func(int) {}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("second start: %v", err)
	}
	if err := p.Pause(func() error { return nil }, report("pause")); err != nil {
		t.Fatal(err)
	}
	if err := p.WhileRunning(func() error { return nil }); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("while running, when paused: %v", err)
	}
	if err := p.Resume(func() error { return errors.New("thaw failed") }, report("resume")); err == nil || p.Snapshot().Status != Paused {
		t.Fatalf("failed resume: %v, %s", err, p.Snapshot().Status)
	}
	if err := p.Resume(func() error { return nil }, report("resume")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Delete(func(Snapshot, *IO) error { return nil }); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("delete running: %v", err)
	}
	now := time.Now()
	if err := p.Exit(3, now, report("exit")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("exited not closed")
	}
	if s := p.Snapshot(); s.Status != Stopped || s.ExitCode != 3 || !s.ExitedAt.Equal(now) {
		t.Fatal(s)
	}
	if err := p.Kill(9, nil); !errdefs.IsNotFound(err) {
		t.Fatalf("kill after exit: %v", err)
	}
	if err := p.Pause(func() error { return nil }, report("pause")); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("pause after exit: %v", err)
	}
	s, err := p.Delete(func(Snapshot, *IO) error { return nil })
	if err != nil || s.ExitCode != 3 {
		t.Fatal(s, err)
	}
	if want := "start pause resume exit"; strings.Join(events, " ") != want {
		t.Errorf("reports %q, want %q", strings.Join(events, " "), want)
	}
}

// TestDeleteNeverStarted: an exec registered and never started is deleted
// at once, and its waiters are released.
func TestDeleteNeverStarted(t *testing.T) {
	q := New("e2", stdio.Stdio{}, nil)
	if _, err := q.Delete(func(Snapshot, *IO) error { return nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.Exited():
	default:
		t.Fatal("waiters of a deleted created process not released")
	}
	if s := q.Snapshot(); s.Status != Deleted || !s.ExitedAt.IsZero() {
		t.Fatal(s)
	}
}

package process

import (
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
)

func TestStateMachine(t *testing.T) {
	p := New("e1", stdio.Stdio{}, nil)
	if p.Status() != Created {
		t.Fatal(p.Status())
	}
	if err := p.Kill(9); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("kill before start: %v", err)
	}
	if err := p.SetRunning(); err != nil {
		t.Fatal(err)
	}
	if err := p.SetDeleted(); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("delete running: %v", err)
	}
	now := time.Now()
	if err := p.SetExited(3, now); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("exited not closed")
	}
	if code, at := p.ExitStatus(); code != 3 || !at.Equal(now) {
		t.Fatal(code, at)
	}
	if err := p.Kill(9); !errdefs.IsNotFound(err) {
		t.Fatalf("kill after exit: %v", err)
	}
	if err := p.SetRunning(); err == nil {
		t.Fatal("stopped -> running allowed")
	}
	if err := p.SetDeleted(); err != nil {
		t.Fatal(err)
	}

	// created -> deleted (never started) releases waiters.
	q := New("e2", stdio.Stdio{}, nil)
	if err := q.SetDeleted(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.Exited():
	default:
		t.Fatal("waiters of a deleted created process not released")
	}
}

package process

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// Status is a process' lifecycle state.
//
//	created --start--> running --exit--> stopped --delete--> deleted
//	                   running <--pause/resume--> paused
//	                   paused --exit--> stopped
//	created --exit (killed before start)--> stopped
//	created --delete--> deleted (Delete kills an existing one first)
//
// Paused is a container's init only: pausing freezes the container's
// cgroup, and an exec's state follows its init's.
type Status int

const (
	Created Status = iota
	Running
	Paused
	Stopped
	Deleted
)

func (s Status) String() string {
	switch s {
	case Created:
		return "created"
	case Running:
		return "running"
	case Paused:
		return "paused"
	case Stopped:
		return "stopped"
	case Deleted:
		return "deleted"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

var transitions = map[Status][]Status{
	Created: {Running, Stopped, Deleted},
	Running: {Paused, Stopped},
	Paused:  {Running, Stopped},
	Stopped: {Deleted},
}

// transition checks that from -> to is a legal move.
func transition(from, to Status) error {
	for _, ok := range transitions[from] {
		if ok == to {
			return nil
		}
	}
	return fmt.Errorf("process is %s, cannot become %s: %w", from, to, errdefs.ErrFailedPrecondition)
}

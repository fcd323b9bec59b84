package task

import (
	"context"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/log"
)

// eventQueue publishes events one at a time, in the order they were
// queued. Callers queue an event while holding the lock of the process
// whose transition it reports, which is what orders Create < Start < Exit
// < Delete for a process.
type eventQueue struct {
	mu     sync.Mutex
	ch     chan any
	closed bool
	done   chan struct{}
}

func newEventQueue(ctx context.Context, publisher Publisher) *eventQueue {
	q := &eventQueue{ch: make(chan any, 128), done: make(chan struct{})}
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer close(q.done)
		defer publisher.Close()
		for e := range q.ch {
			if err := publisher.Publish(ctx, runtime.GetTopic(e), e); err != nil {
				log.G(ctx).WithError(err).Errorf("publish %s", runtime.GetTopic(e))
			}
		}
	}()
	return q
}

func (q *eventQueue) send(e any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.ch <- e
}

// close stops accepting events and waits for the queued ones to go out.
func (q *eventQueue) close(timeout time.Duration) {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	select {
	case <-q.done:
	case <-time.After(timeout):
	}
}

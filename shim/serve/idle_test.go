package serve

import (
	"context"
	"errors"
	"testing"
	"time"
)

// After a call ends, the releaser releases once the delay has passed, and
// the call's reply and error go through unchanged.
func TestIdleReleaserReleasesAfterACall(t *testing.T) {
	released := make(chan struct{}, 4)
	r := newIdleReleaser(time.Millisecond, func() { released <- struct{}{} })
	if r.timer != nil {
		t.Fatal("a countdown runs before any call")
	}
	boom := errors.New("boom")
	resp, err := r.interceptor(context.Background(), nil, nil, func(context.Context, func(any) error) (any, error) {
		return "reply", boom
	})
	if resp != "reply" || err != boom {
		t.Fatalf("interceptor returned %v, %v", resp, err)
	}
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("no release after the call")
	}
	// Another call starts another countdown.
	r.interceptor(context.Background(), nil, nil, func(context.Context, func(any) error) (any, error) { return nil, nil })
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("no release after the second call")
	}
}

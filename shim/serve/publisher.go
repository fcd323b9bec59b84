package serve

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/ttrpcutil"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
)

// Publisher sends the shim's events to containerd.
type Publisher interface {
	events.Publisher
	io.Closer
}

const (
	// forwardTimeout bounds one Forward call to containerd.
	forwardTimeout = 5 * time.Second
	// maxRetries is how often an event that failed to go out is tried
	// again, after 1 s, 2 s, ... so containerd restarting loses nothing.
	maxRetries = 5
	retryQueue = 2048
)

// eventPublisher forwards events to containerd's ttrpc events service
// ($TTRPC_ADDRESS), retrying failed ones in the background.
type eventPublisher struct {
	client *ttrpcutil.Client
	retry  chan *pendingEvent
	closed chan struct{}
	once   sync.Once
}

type pendingEvent struct {
	ctx      context.Context
	envelope *types.Envelope
	tries    int
}

// NewPublisher returns a Publisher to the containerd at ttrpc address.
func NewPublisher(address string) (Publisher, error) {
	client, err := ttrpcutil.NewClient(address)
	if err != nil {
		return nil, err
	}
	p := &eventPublisher{client: client, retry: make(chan *pendingEvent, retryQueue), closed: make(chan struct{})}
	go p.retryLoop()
	return p, nil
}

// Publish sends event now; if that fails it is retried later and the
// error is returned.
func (p *eventPublisher) Publish(ctx context.Context, topic string, event events.Event) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	any, err := typeurl.MarshalAnyToProto(event)
	if err != nil {
		return err
	}
	e := &pendingEvent{ctx: ctx, envelope: &types.Envelope{
		Timestamp: protobuf.ToTimestamp(time.Now()),
		Namespace: ns,
		Topic:     topic,
		Event:     any,
	}}
	if err := p.forward(e); err != nil {
		p.later(e)
		return err
	}
	return nil
}

func (p *eventPublisher) retryLoop() {
	for e := range p.retry {
		if e.tries > maxRetries {
			log.G(e.ctx).Errorf("dropping event %s after %d tries", e.envelope.Topic, e.tries)
			continue
		}
		if err := p.forward(e); err != nil {
			log.G(e.ctx).WithError(err).Error("forward event")
			p.later(e)
		}
	}
}

// later queues e again after a pause that grows with each try.
func (p *eventPublisher) later(e *pendingEvent) {
	e.tries++
	time.AfterFunc(time.Duration(e.tries)*time.Second, func() {
		select {
		case p.retry <- e:
		case <-p.closed:
		}
	})
}

// forward sends e once, reconnecting first if the connection to
// containerd was closed (containerd restarted).
func (p *eventPublisher) forward(e *pendingEvent) error {
	err := p.forwardOnce(e)
	if !errors.Is(err, ttrpc.ErrClosed) {
		return err
	}
	if err := p.client.Reconnect(); err != nil {
		return err
	}
	return p.forwardOnce(e)
}

func (p *eventPublisher) forwardOnce(e *pendingEvent) error {
	svc, err := p.client.EventsService()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, forwardTimeout)
	defer cancel()
	_, err = svc.Forward(ctx, &eventsapi.ForwardRequest{Envelope: e.envelope})
	return err
}

// Close ends the connection; events still waiting for a retry are
// dropped (retryLoop then idles until the process exits).
func (p *eventPublisher) Close() error {
	p.once.Do(func() { close(p.closed) })
	return p.client.Close()
}

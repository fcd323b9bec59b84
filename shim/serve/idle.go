package serve

import (
	"context"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
)

// idleRelease is how long after its last call the shim hands the memory
// that call left behind back to the kernel.
const idleRelease = time.Second

// idleReleaser returns memory to the kernel once the shim has been idle
// for a while. A container's Create leaves megabytes of garbage and grown
// stacks behind (the spec, netlink's 64 KiB receive buffers on the stack);
// without this they stay resident until the runtime's scavenger or the
// 30 s FreeOSMemory gets to them, which on a node starting many pods at
// once adds up. One forced GC per burst of calls, off the request path.
type idleReleaser struct {
	mu      sync.Mutex
	timer   *time.Timer
	delay   time.Duration
	release func()
}

func newIdleReleaser(delay time.Duration, release func()) *idleReleaser {
	return &idleReleaser{delay: delay, release: release}
}

// touch (re)starts the countdown to the next release.
func (r *idleReleaser) touch() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.timer == nil {
		r.timer = time.AfterFunc(r.delay, r.release)
		return
	}
	r.timer.Reset(r.delay)
}

// interceptor counts every ttrpc call's end as activity.
func (r *idleReleaser) interceptor(ctx context.Context, unmarshal ttrpc.Unmarshaler, _ *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
	defer r.touch()
	return method(ctx, unmarshal)
}

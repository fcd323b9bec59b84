package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
)

// Service is the daemon's ttrpc API.
type Service interface {
	RegisterTTRPC(*ttrpc.Server) error
}

// NewService makes the daemon's Service. It publishes events through pub
// and registers its cleanup with sd; the daemon exits once sd's callbacks
// have run.
type NewService func(ctx context.Context, pub Publisher, sd shutdown.Service) (Service, error)

// serveDaemon is the long-running shim: it serves the task API on the
// socket `start` passed as fd 3, reaps every child (it is their
// subreaper), and exits after the service shut it down or on SIGTERM.
func serveDaemon(ctx context.Context, f *flags, sig *signals, newService NewService) error {
	tuneRuntime()
	if err := reaper.SetSubreaper(1); err != nil {
		return fmt.Errorf("become subreaper: %w", err)
	}
	ctx, err := logToFifo(ctx, f.debug)
	if err != nil {
		return err
	}
	ctx, sd := shutdown.WithShutdown(ctx)
	defer sd.Shutdown()

	pub, err := NewPublisher(os.Getenv("TTRPC_ADDRESS"))
	if err != nil {
		return fmt.Errorf("connect to containerd's events: %w", err)
	}
	svc, err := newService(ctx, pub, sd)
	if err != nil {
		return err
	}
	idle := newIdleReleaser(idleRelease, debug.FreeOSMemory)
	server, err := ttrpc.NewServer(
		ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()),
		ttrpc.WithUnaryServerInterceptor(idle.interceptor))
	if err != nil {
		return err
	}
	if err := svc.RegisterTTRPC(server); err != nil {
		return err
	}
	l, err := listener(f.socket)
	if err != nil {
		return err
	}
	logger := log.G(ctx).WithFields(log.Fields{"pid": os.Getpid(), "namespace": f.namespace})
	go func() {
		defer l.Close()
		err := server.Serve(ctx, l)
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, ttrpc.ErrServerClosed) {
			logger.WithError(err).Fatal("ttrpc server failed")
		}
	}()
	go dumpStacks(sig.dump, logger)
	go shutdownOnSignal(ctx, sig.exit, sd)
	// ctx is the shutdown service's: it ends once Shutdown's callbacks
	// have all returned.
	reapLoop(ctx, sig.child)
	// Let the reply to the Shutdown call that stopped us go out.
	flushCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = server.Shutdown(flushCtx)
	return nil
}

// tuneRuntime keeps an idle shim small: a lower GC target, memory handed
// back to the kernel every 30 s, and two Ps unless containerd set
// GOMAXPROCS (fewer threads, so fewer stacks).
func tuneRuntime() {
	debug.SetGCPercent(40)
	go func() {
		for range time.Tick(30 * time.Second) {
			debug.FreeOSMemory()
		}
	}()
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(2)
	}
}

// signals are the ones the shim handles, subscribed before it does
// anything else: SIGTERM and SIGINT would otherwise end a Go program at
// once, without its shutdown callbacks, and SIGPIPE when the log fifo's
// reader (containerd) goes away, since the log is stderr.
type signals struct {
	child chan os.Signal // SIGCHLD (to reap) and SIGPIPE (to ignore)
	exit  chan os.Signal // SIGTERM, SIGINT: shut down
	dump  chan os.Signal // SIGUSR1: log every goroutine's stack
}

func notifySignals() *signals {
	s := &signals{child: make(chan os.Signal, 32), exit: make(chan os.Signal, 1), dump: make(chan os.Signal, 1)}
	signal.Notify(s.child, unix.SIGCHLD, unix.SIGPIPE)
	signal.Notify(s.exit, unix.SIGTERM, unix.SIGINT)
	signal.Notify(s.dump, unix.SIGUSR1)
	return s
}

// reapLoop reaps children on SIGCHLD until ctx ends; pkg/sys/reaper hands
// each exit to whoever started the process through it.
func reapLoop(ctx context.Context, ch chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-ch:
			if s != unix.SIGCHLD {
				continue
			}
			if err := reaper.Reap(); err != nil {
				log.G(ctx).WithError(err).Error("reap exit status")
			}
		}
	}
}

// logToFifo sends the shim's log (and, by dup2 onto stderr, a panic's
// trace) to the "log" fifo containerd made in the bundle and reads.
func logToFifo(ctx context.Context, debugLog bool) (context.Context, error) {
	_ = log.SetFormat(log.TextFormat)
	if debugLog {
		_ = log.SetLevel(log.DebugLevel)
	}
	w, err := fifo.OpenFifoDup2(ctx, "log", unix.O_WRONLY, 0o700, int(os.Stderr.Fd()))
	if err != nil {
		return ctx, fmt.Errorf("open log fifo: %w", err)
	}
	l := log.G(ctx)
	l.Logger.SetOutput(w)
	return log.WithLogger(ctx, l), nil
}

// listener is the socket `start` made and passed as fd 3, or path when
// the shim was started by hand with -socket (for debugging: containerd
// never passes it).
func listener(path string) (net.Listener, error) {
	if path == "" {
		return net.FileListener(os.NewFile(3, "socket"))
	}
	return net.Listen("unix", path)
}

// shutdownOnSignal shuts the shim down on SIGTERM or SIGINT, as it would
// when its last container is deleted.
func shutdownOnSignal(ctx context.Context, ch chan os.Signal, sd shutdown.Service) {
	select {
	case s := <-ch:
		log.G(ctx).WithField("signal", s).Debug("exit signal")
		sd.Shutdown()
	case <-ctx.Done():
	}
}

// dumpStacks logs every goroutine's stack on each SIGUSR1, as containerd's
// shims do, for debugging a stuck shim.
func dumpStacks(ch chan os.Signal, logger *log.Entry) {
	for range ch {
		buf := make([]byte, 1<<16)
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) {
				buf = buf[:n]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		logger.Infof("=== goroutine stacks ===\n%s\n=== end of goroutine stacks ===", buf)
	}
}

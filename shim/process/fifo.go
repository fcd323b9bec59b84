package process

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fifoWriter is the write end of an output FIFO, opened in the background:
// the open blocks until the client opens the read end, and writes wait for
// it. It is one open for both the wait in openOutputFifo and a client that
// comes later. (containerd/fifo's timed open, when it gives up, unblocks
// itself with a reader of its own; a second open made right after could
// pair with that reader, which then goes away, leaving a writer no client
// will ever meet.)
type fifoWriter struct {
	handle *os.File // O_PATH, so the open and Close's unblocking do not depend on the name
	opened chan struct{}

	mu       sync.Mutex
	file     *os.File
	err      error
	closed   bool
	close    sync.Once
	closeErr error
}

func openFifoWriter(path string) (*fifoWriter, error) {
	h, err := os.OpenFile(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	w := &fifoWriter{handle: h, opened: make(chan struct{})}
	go func() {
		f, err := os.OpenFile(w.procPath(), os.O_WRONLY, 0)
		w.mu.Lock()
		if w.closed && err == nil {
			f.Close()
			f, err = nil, os.ErrClosed
		}
		w.file, w.err = f, err
		w.mu.Unlock()
		close(w.opened)
	}()
	return w, nil
}

func (w *fifoWriter) procPath() string { return fmt.Sprintf("/proc/self/fd/%d", w.handle.Fd()) }

func (w *fifoWriter) Write(b []byte) (int, error) {
	<-w.opened
	if w.err != nil {
		return 0, w.err
	}
	return w.file.Write(b)
}

// Close closes the write end, or gives up an open still waiting for the
// client: a reader of our own lets the pending open return.
func (w *fifoWriter) Close() error {
	w.close.Do(func() { w.closeErr = w.doClose() })
	return w.closeErr
}

func (w *fifoWriter) doClose() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	for {
		select {
		case <-w.opened:
			var err error
			if w.file != nil {
				err = w.file.Close()
			}
			w.handle.Close()
			return err
		default:
		}
		if r, err := os.OpenFile(w.procPath(), os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			<-w.opened
			r.Close()
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}

// openOutputFifo opens the write end of an output FIFO and waits (up to
// fifoOpenWait) until the client has opened the read end, as runc's shim
// does. containerd's client opens its ends in the background and, before
// it deletes a task, cancels any open still pending: had the process run
// and exited before that open, its output would be dropped. A client that
// does not come within fifoOpenWait gets the output once it does: the
// open goes on in the background and writes wait for it, and Close
// gives it up, so nothing waits beyond Delete's drain timeout.
func openOutputFifo(ctx context.Context, path string) (*fifoWriter, error) {
	w, err := openFifoWriter(path)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(fifoOpenWait)
	defer timer.Stop()
	select {
	case <-w.opened:
		if w.err != nil {
			w.Close()
			return nil, w.err
		}
	case <-timer.C:
	case <-ctx.Done():
		w.Close()
		return nil, ctx.Err()
	}
	return w, nil
}

// Package serve is the shim binary's side of containerd's runtime v2 shim
// protocol: `-v`, `-info`, `start`, `delete`, and the long-running daemon
// that serves the task API over ttrpc. containerd's pkg/shim does the same
// job, but it links containerd's task API package, whose gRPC bindings
// bring gRPC and net/http into every shim process; this one serves ttrpc
// only (proto/taskapi), so an idle shim holds less memory and starts
// sooner. What containerd sees (flags, stdin/stdout payloads, the socket,
// the log fifo, events) is unchanged.
package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/log"
	"github.com/tupper/tupper/proto/taskapi"
	"google.golang.org/protobuf/proto"
)

// Manager is what `start`, `delete` and `-info` do; the daemon's work is
// the Service that NewService returns.
type Manager interface {
	Name() string
	Start(ctx context.Context, params *bootapi.BootstrapParams) (*bootapi.BootstrapResult, error)
	Stop(ctx context.Context, id string) (StopStatus, error)
	Info(ctx context.Context, options io.Reader) (*types.RuntimeInfo, error)
}

// StopStatus is what `delete` reports of the container's init.
type StopStatus struct {
	Pid        int
	ExitStatus int
	ExitedAt   time.Time
}

// flags are the command line containerd gives a shim (core/runtime/v2):
// every flag pkg/shim defines is accepted, so no invocation fails to parse.
type flags struct {
	debug, version, info bool
	namespace, id        string
	socket               string
	action               string
}

func parseFlags(args []string) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet(filepath.Base(args[0]), flag.ContinueOnError)
	fs.BoolVar(&f.debug, "debug", false, "enable debug output in logs")
	fs.BoolVar(&f.version, "v", false, "")
	fs.BoolVar(&f.version, "version", false, "show the shim version and exit")
	fs.BoolVar(&f.info, "info", false, "read runtime options from stdin, write the runtime info protobuf to stdout, and exit")
	fs.StringVar(&f.namespace, "namespace", "", "namespace that owns the shim")
	fs.StringVar(&f.id, "id", "", "id of the task")
	fs.StringVar(&f.socket, "socket", "", "socket path to serve (default: the socket on fd 3)")
	// Accepted, unused: containerd passes them, but the bundle is the
	// working directory, start reads the addresses from its bootstrap
	// parameters, and events go to $TTRPC_ADDRESS.
	for _, name := range []string{"debug-socket", "bundle", "address", "publish-binary"} {
		fs.String(name, "", "accepted, unused")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	f.action = fs.Arg(0)
	return f, nil
}

// Main runs the shim binary and exits. version is printed for -v.
func Main(m Manager, version string, newService NewService) {
	ctx := log.WithLogger(context.Background(), log.G(context.Background()).WithField("runtime", m.Name()))
	if err := run(ctx, m, version, newService, os.Args, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s", m.Name(), err)
		os.Exit(1)
	}
}

func run(ctx context.Context, m Manager, version string, newService NewService, args []string, stdin io.Reader, stdout io.Writer) error {
	f, err := parseFlags(args)
	if err != nil {
		return err
	}
	switch {
	case f.version:
		_, err := fmt.Fprintf(stdout, "%s:\n  Version:  %s\n  Go version: %s\n\n", filepath.Base(args[0]), version, runtime.Version())
		return err
	case f.info:
		info, err := m.Info(ctx, stdin)
		if err != nil {
			return err
		}
		return writeProto(stdout, info)
	case f.namespace == "":
		return errors.New("shim namespace cannot be empty")
	}
	sig := notifySignals()
	ctx = namespaces.WithNamespace(ctx, f.namespace)
	switch f.action {
	case "start":
		return start(ctx, m, f, stdin, stdout)
	case "delete":
		return del(ctx, m, f, stdout)
	case "":
		return serveDaemon(ctx, f, sig, newService)
	default:
		return fmt.Errorf("unknown action %q", f.action)
	}
}

// start reads containerd's bootstrap parameters from stdin and writes the
// manager's result (the address to dial) to stdout.
func start(ctx context.Context, m Manager, f *flags, stdin io.Reader, stdout io.Writer) error {
	// Bounded: stdin comes from containerd, but a shim never needs more.
	input, err := io.ReadAll(io.LimitReader(stdin, 10<<20))
	if err != nil {
		return fmt.Errorf("read bootstrap parameters: %w", err)
	}
	if len(input) == 0 {
		return errors.New("no bootstrap parameters on stdin: containerd used the deprecated shim start API; restart containerd if it was upgraded")
	}
	params := &bootapi.BootstrapParams{}
	if err := proto.Unmarshal(input, params); err != nil {
		return fmt.Errorf("decode bootstrap parameters: %w", err)
	}
	if params.GetInstanceID() != f.id || params.GetNamespace() != f.namespace {
		return fmt.Errorf("bootstrap parameters (id %q, namespace %q) do not match the command line (id %q, namespace %q)",
			params.GetInstanceID(), params.GetNamespace(), f.id, f.namespace)
	}
	result, err := m.Start(ctx, params)
	if err != nil {
		return err
	}
	return writeProto(stdout, result)
}

// del is `shim delete`: containerd runs it after Delete, or in place of
// it when the shim is gone, and reads the init's exit from stdout.
func del(ctx context.Context, m Manager, f *flags, stdout io.Writer) error {
	if f.debug {
		_ = log.SetLevel(log.DebugLevel)
	}
	ss, err := m.Stop(ctx, f.id)
	if err != nil {
		return err
	}
	return writeProto(stdout, &taskapi.DeleteResponse{
		Pid:        uint32(ss.Pid),
		ExitStatus: uint32(ss.ExitStatus),
		ExitedAt:   protobuf.ToTimestamp(ss.ExitedAt),
	})
}

// writeProto writes a reply to containerd.
func writeProto(w io.Writer, m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

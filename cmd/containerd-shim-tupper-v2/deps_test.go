package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestShimLinksNoGRPC: every container runs one of these daemons, and
// what it links, it keeps in memory (package data, init allocations) and
// pays at start. It serves ttrpc only, so it must not link gRPC's server
// and client or net/http, which containerd's task API package and
// pkg/shim bring in (shim/serve and proto/taskapi replace them). Linking
// both containerd's task API package and proto/taskapi would also panic
// at init: both register containerd.task.v3.
func TestShimLinksNoGRPC(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/tupper/tupper/cmd/containerd-shim-tupper-v2").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	unwanted := map[string]bool{
		"google.golang.org/grpc": true,
		"net/http":               true,
		"github.com/containerd/containerd/api/runtime/task/v3": true,
		"github.com/containerd/containerd/v2/pkg/shim":         true,
	}
	pkgs := strings.Fields(string(out))
	found := map[string]bool{}
	for _, p := range pkgs {
		found[p] = true
		if unwanted[p] {
			t.Errorf("the shim links %s", p)
		}
	}
	// The list is the shim's: a wrong package path would pass vacuously.
	for _, want := range []string{"github.com/tupper/tupper/shim/serve", "github.com/tupper/tupper/proto/taskapi", "github.com/containerd/ttrpc"} {
		if !found[want] {
			t.Errorf("go list does not show the shim linking %s: %d packages", want, len(pkgs))
		}
	}
}

package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// helperTags returns the build tags the Makefile builds tupper-helper with
// (its HELPER_TAGS line), so that the test checks the binary make builds.
func helperTags(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^HELPER_TAGS := (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("the Makefile has no HELPER_TAGS line")
	}
	return string(m[1])
}

// TestHelperLinksLittle: every container start and every exec runs this
// binary, and each package it links adds its init to that path. It must
// not link CRIU's protobuf bindings, the cgroup managers (eBPF, D-Bus),
// gRPC, or libseccomp (it loads the program the parent compiled), which
// only the shim's daemon uses.
func TestHelperLinksLittle(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-tags", helperTags(t), "github.com/tupper/tupper/cmd/tupper-helper").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	unwanted := []string{
		"github.com/checkpoint-restore/go-criu/",
		"google.golang.org/protobuf/",
		"github.com/containerd/cgroups/",
		"github.com/opencontainers/cgroups",
		"github.com/cilium/ebpf",
		"github.com/godbus/dbus/",
		"google.golang.org/grpc",
		"net/http",
		"github.com/seccomp/libseccomp-golang",
		"github.com/tupper/tupper/shim/seccomp",
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 50 {
		t.Fatalf("go list found only %d packages: %s", len(pkgs), out)
	}
	for _, p := range pkgs {
		for _, u := range unwanted {
			if strings.HasPrefix(p, u) {
				t.Errorf("tupper-helper links %s", p)
			}
		}
	}
}

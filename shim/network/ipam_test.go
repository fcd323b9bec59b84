package network

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestIPAMAllocatesDistinctPersistentAddresses(t *testing.T) {
	dir := t.TempDir()
	subnet := netip.MustParsePrefix("10.213.7.0/24")
	p, err := NewIPAM(dir, subnet)
	if err != nil {
		t.Fatal(err)
	}
	// 50 concurrent owners, each through its own IPAM (as separate shims would be).
	var wg sync.WaitGroup
	got := make([]netip.Addr, 50)
	errs := make([]error, 50)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q, _ := NewIPAM(dir, subnet)
			got[i], errs[i] = q.Allocate(fmt.Sprintf("c%d", i))
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, a := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[a] || !subnet.Contains(a) || a == p.Gateway() || a == subnet.Addr() {
			t.Fatalf("bad or duplicate address %s", a)
		}
		seen[a] = true
	}
	// A fresh IPAM (a restarted shim) sees the same allocations and gives an
	// owner its existing address again.
	q, _ := NewIPAM(dir, subnet)
	all, err := q.Allocations()
	if err != nil || len(all) != 50 {
		t.Fatalf("allocations after restart: %d, %v", len(all), err)
	}
	if a, _ := q.Allocate("c7"); a != got[7] {
		t.Fatalf("c7 got %s again, had %s", a, got[7])
	}
	for i := range got {
		if err := q.Release(fmt.Sprintf("c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if all, _ := q.Allocations(); len(all) != 0 {
		t.Fatalf("left after release: %v", all)
	}
}

func TestIPAMExhaustion(t *testing.T) {
	p, err := NewIPAM(t.TempDir(), netip.MustParsePrefix("10.213.8.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	// .0 network, .1 gateway, .7 broadcast: .2-.6 are usable.
	for i := 0; i < 5; i++ {
		if _, err := p.Allocate(fmt.Sprint(i)); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	_, err = p.Allocate("one-too-many")
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "10.213.8.0/29") {
		t.Fatalf("exhausted subnet: %v", err)
	}
	if all, _ := p.Allocations(); len(all) != 5 {
		t.Fatalf("failed allocation changed state: %v", all)
	}
	p.Release("3")
	if a, err := p.Allocate("late"); err != nil || a != netip.MustParseAddr("10.213.8.5") {
		t.Fatalf("released address not reused: %s %v", a, err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		ann  map[string]string
		want string
	}{
		{map[string]string{AnnotationMode: "overlay"}, `"overlay"`},
		{map[string]string{AnnotationBridge: "a-name-longer-than-15"}, "a-name-longer-than-15"},
		{map[string]string{AnnotationBridge: "br/0"}, "br/0"},
		{map[string]string{AnnotationBridge: "br\x00x"}, `"br\x00x"`},
		{map[string]string{AnnotationBridge: "br\vx"}, `"br\vx"`},
		{map[string]string{AnnotationSubnet: "10.0.0.0/33"}, "10.0.0.0/33"},
		{map[string]string{AnnotationSubnet: "fd00::/64"}, "IPv4"},
		{map[string]string{AnnotationSubnet: "10.1.1.0/31"}, "/30"},
		{map[string]string{AnnotationSubnet6: "10.1.0.0/16"}, "IPv6"},
		{map[string]string{AnnotationNAT: "yes"}, `"yes"`},
		{map[string]string{AnnotationNAT: "true", AnnotationNATInterface: "eth0/x"}, "eth0/x"},
	} {
		_, err := DefaultConfig().WithAnnotations(tc.ann)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an invalid-argument error naming %s", tc.ann, err, tc.want)
		}
	}
	c, err := DefaultConfig().WithAnnotations(map[string]string{AnnotationBridge: "br1", AnnotationSubnet: "10.214.0.5/24", AnnotationSubnet6: "fd42::/64"})
	if err != nil || c.Bridge != "br1" || c.Subnet.String() != "10.214.0.0/24" || c.Subnet6.String() != "fd42::/64" {
		t.Fatalf("annotations not applied: %+v %v", c, err)
	}
}

func TestManaged(t *testing.T) {
	spec := func(ns ...specs.LinuxNamespace) *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Namespaces: ns}}
	}
	newNet := specs.LinuxNamespace{Type: specs.NetworkNamespace}
	joinNet := specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"}
	nerdctl := spec(newNet)
	nerdctl.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/usr/local/bin/nerdctl", Args: []string{"nerdctl", "internal", "oci-hook", "createRuntime"}}}}
	none := DefaultConfig()
	none.Mode = ModeNone
	for _, tc := range []struct {
		name string
		spec *specs.Spec
		c    Config
		want bool
	}{
		{"new netns", spec(newNet), DefaultConfig(), true},
		{"netns path (CRI/CNI)", spec(joinNet), DefaultConfig(), false},
		{"host network", spec(specs.LinuxNamespace{Type: specs.PIDNamespace}), DefaultConfig(), false},
		{"nerdctl hooks", nerdctl, DefaultConfig(), false},
		{"mode none", spec(newNet), none, false},
	} {
		if got := Managed(tc.spec, tc.c); got != tc.want {
			t.Errorf("%s: Managed = %v, want %v", tc.name, got, tc.want)
		}
	}
}

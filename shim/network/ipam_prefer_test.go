package network

import (
	"net/netip"
	"testing"
)

// A restored container gets its old address back when it is free and the
// subnet's, and any other one otherwise.
func TestAllocatePreferring(t *testing.T) {
	p, err := NewIPAM(t.TempDir(), netip.MustParsePrefix("10.250.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddr("10.250.0.77")
	if a, err := p.AllocatePreferring("a", want); err != nil || a != want {
		t.Fatalf("free address: got %v %v", a, err)
	}
	if a, err := p.AllocatePreferring("b", want); err != nil || a == want || !a.IsValid() {
		t.Fatalf("taken address: got %v %v", a, err)
	}
	for _, bad := range []string{"10.251.0.5", "10.250.0.1", "10.250.0.0", "10.250.0.255"} {
		a, err := p.AllocatePreferring("c-"+bad, netip.MustParseAddr(bad))
		if err != nil || a.String() == bad {
			t.Fatalf("preferring %s (not usable): got %v %v", bad, a, err)
		}
	}
}

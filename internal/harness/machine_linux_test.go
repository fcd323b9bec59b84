package harness

import (
	"net/netip"
	"slices"
	"testing"
)

// TestRouteDestinations: a test's /30 inside a 10.213.x.0/24 makes that
// /24 taken for FreeSubnet; the default route and a wider route do not.
func TestRouteDestinations(t *testing.T) {
	out := "default via 192.0.2.1 dev eth0 \n" +
		"10.213.150.0/30 dev tpf1 proto kernel scope link src 10.213.150.1 \n" +
		"192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2 \n" +
		"10.0.0.0/8 via 192.0.2.9 dev eth0 \n"
	dsts := routeDestinations(out)
	want := []netip.Prefix{netip.MustParsePrefix("10.213.150.0/30"), netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("10.0.0.0/8")}
	if !slices.Equal(dsts, want) {
		t.Fatalf("destinations %v, want %v", dsts, want)
	}
	for subnet, taken := range map[string]bool{"10.213.150.0/24": true, "10.213.151.0/24": false} {
		p := netip.MustParsePrefix(subnet)
		if got := slices.ContainsFunc(dsts, func(dst netip.Prefix) bool { return within(dst, p) }); got != taken {
			t.Errorf("%s taken: %v, want %v", subnet, got, taken)
		}
	}
}

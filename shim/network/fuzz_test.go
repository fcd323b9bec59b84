package network

import (
	"strings"
	"testing"
)

// FuzzAnnotations: annotations are refused or give a config whose bridge name
// is a safe interface name and whose subnets have room for addresses.
func FuzzAnnotations(f *testing.F) {
	f.Add("bridge", "tupper0", "10.209.0.0/16", "")
	f.Add("none", "", "", "")
	f.Add("bridge", "../../etc", "10.0.0.0/31", "fd00::/127")
	f.Add("bridge", "br\x00x", "10.1.0.0/24", "")
	f.Fuzz(func(t *testing.T, mode, bridge, subnet, subnet6 string) {
		c, err := DefaultConfig().WithAnnotations(map[string]string{
			AnnotationMode: mode, AnnotationBridge: bridge, AnnotationSubnet: subnet, AnnotationSubnet6: subnet6,
		})
		if err != nil || c.Mode == ModeNone {
			return
		}
		if len(c.Bridge) == 0 || len(c.Bridge) > 15 || strings.ContainsAny(c.Bridge, "/: \x00\t\n\r\v\f\x01\x7f") {
			t.Fatalf("accepted bridge name %q", c.Bridge)
		}
		if c.Subnet.Bits() > 30 || !c.Subnet.Addr().Is4() {
			t.Fatalf("accepted subnet %s", c.Subnet)
		}
	})
}

package network

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/containerd/errdefs"
)

// Outbound NAT is explicit and off by default: one iptables MASQUERADE rule
// per bridge for the subnet's traffic leaving through NATInterface (or
// through any interface but the bridge when that is empty). The first
// container that needs it adds the rule and the last one to go removes it;
// both happen under the IPAM lock, so concurrent shims agree.

func (c Config) natRule() []string {
	rule := []string{"POSTROUTING", "-s", c.Subnet.String()}
	if c.NATInterface != "" {
		rule = append(rule, "-o", c.NATInterface)
	} else {
		rule = append(rule, "!", "-o", c.Bridge)
	}
	return append(rule, "-m", "comment", "--comment", "tupper "+c.Bridge, "-j", "MASQUERADE")
}

func iptables(args ...string) error {
	out, err := exec.Command("iptables", append([]string{"-w", "-t", "nat"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ensureNAT adds the rule if it is not there. It refuses, rather than
// changing a host setting behind the administrator's back, when the host
// does not forward IPv4.
func ensureNAT(c Config) error {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(string(b)) != "1" {
		return fmt.Errorf("outbound NAT needs IPv4 forwarding, which is off on this host (sysctl net.ipv4.ip_forward=1): %w", errdefs.ErrFailedPrecondition)
	}
	rule := c.natRule()
	if iptables(append([]string{"-C"}, rule...)...) == nil {
		return nil
	}
	return iptables(append([]string{"-A"}, rule...)...)
}

// removeNAT deletes the rule; a rule already gone is fine.
func removeNAT(c Config) error {
	rule := c.natRule()
	if iptables(append([]string{"-C"}, rule...)...) != nil {
		return nil
	}
	return iptables(append([]string{"-D"}, rule...)...)
}

// NATActive reports whether the bridge's NAT rule is in place.
func NATActive(c Config) bool { return iptables(append([]string{"-C"}, c.natRule()...)...) == nil }

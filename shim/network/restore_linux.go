package network

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A container restored by CRIU gets its network namespace back from the
// checkpoint, eth0, addresses and routes included; only the veth pair is
// made again (by CRIU, its host end on the bridge). PrepareRestore gets
// the host side ready for that, Readdress moves eth0 to other addresses
// when the saved ones were taken.

// PrepareRestore makes sure the bridge is there and gives id addresses:
// want4 and want6, the saved ones, where they are this subnet's and free,
// else new ones. The returned attachment names the host veth CRIU must
// make. On error nothing is held.
func PrepareRestore(c Config, id string, want4, want6 netip.Addr) (_ *Attachment, retErr error) {
	ipam, ipam6, _, err := prepareBridge(c)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			Detach(c, id)
		}
	}()
	att := &Attachment{HostVeth: HostVethName(id), Gateway: ipam.Gateway()}
	a, err := ipam.AllocatePreferring(id, want4)
	if err != nil {
		return nil, err
	}
	att.Addr = netip.PrefixFrom(a, c.Subnet.Bits())
	if ipam6 != nil {
		a6, err := ipam6.AllocatePreferring(id, want6)
		if err != nil {
			return nil, err
		}
		att.Addr6, att.Gateway6 = netip.PrefixFrom(a6, c.Subnet6.Bits()), ipam6.Gateway()
	}
	if c.NAT {
		if err := ipam.locked(func() error { return ensureNAT(c) }); err != nil {
			return nil, err
		}
	}
	// A host end left by a crashed shim for the same id goes first.
	if old, err := netlink.LinkByName(att.HostVeth); err == nil {
		netlink.LinkDel(old)
	}
	return att, nil
}

// Readdress gives eth0 in the network namespace at netnsPath the
// attachment's addresses and default routes in place of whatever it had.
func Readdress(netnsPath string, att *Attachment) error {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("restored eth0: %w", err)
	}
	have, err := h.AddrList(eth, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, a := range have {
		if a.IP.IsGlobalUnicast() {
			if err := h.AddrDel(eth, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("removing %s: %w", a.IPNet, err)
			}
		}
	}
	for _, p := range []netip.Prefix{att.Addr, att.Addr6} {
		if p.IsValid() {
			if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}); err != nil {
				return fmt.Errorf("adding %s: %w", p, err)
			}
		}
	}
	for _, gw := range []netip.Addr{att.Gateway, att.Gateway6} {
		if !gw.IsValid() || (gw.Is6() && !att.Addr6.IsValid()) {
			continue
		}
		if err := h.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return nil
}

package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Attachment is what Attach gave a container.
type Attachment struct {
	HostVeth string
	Addr     netip.Prefix // eth0's IPv4 address with the subnet's length
	Gateway  netip.Addr
	Addr6    netip.Prefix // zero without IPv6
	Gateway6 netip.Addr
}

// Attach networks the container whose network namespace is at netnsPath:
// bridge (created on first use), veth pair, eth0 with an address, lo up and a
// default route. On error nothing it made is left behind.
func Attach(c Config, id, netnsPath string) (_ *Attachment, retErr error) {
	ipam, ipam6, br, err := prepareBridge(c)
	if err != nil {
		return nil, err
	}

	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", netnsPath, err)
	}
	defer ns.Close()
	inside, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer inside.Close()

	defer func() {
		if retErr != nil {
			Detach(c, id)
		}
	}()
	att, err := allocate(c, id, ipam, ipam6)
	if err != nil {
		return nil, err
	}
	// A host end left by a crashed shim for the same id goes first.
	if old, err := netlink.LinkByName(att.HostVeth); err == nil {
		netlink.LinkDel(old)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: att.HostVeth, MTU: br.Attrs().MTU, MasterIndex: br.Attrs().Index},
		PeerName:      peerTempName(id),
		PeerMTU:       uint32(br.Attrs().MTU),
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("creating veth pair %s: %w", att.HostVeth, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return nil, fmt.Errorf("bringing up %s: %w", att.HostVeth, err)
	}
	if err := configureInside(inside, peerTempName(id), att); err != nil {
		return nil, fmt.Errorf("configuring eth0 in %s: %w", netnsPath, err)
	}
	return att, nil
}

// prepareBridge checks c, opens its address pools and makes its bridge,
// under the IPAM lock: shims attaching their first containers at once
// would otherwise race to make the bridge, and one could take the route
// of the bridge another just made for an overlap.
func prepareBridge(c Config) (ipam, ipam6 *IPAM, br netlink.Link, err error) {
	if err := c.Validate(); err != nil {
		return nil, nil, nil, err
	}
	if ipam, err = NewIPAM(c.ipamDir(4), c.Subnet); err != nil {
		return nil, nil, nil, err
	}
	if c.Subnet6.IsValid() {
		if ipam6, err = NewIPAM(c.ipamDir(6), c.Subnet6); err != nil {
			return nil, nil, nil, err
		}
	}
	err = ipam.locked(func() (err error) {
		br, err = ensureBridge(c, ipam, ipam6)
		return err
	})
	return ipam, ipam6, br, err
}

// allocate takes the container's addresses (and, with NAT, makes sure
// its rule exists).
func allocate(c Config, id string, ipam, ipam6 *IPAM) (*Attachment, error) {
	att := &Attachment{HostVeth: HostVethName(id), Gateway: ipam.Gateway()}
	addr, err := ipam.Allocate(id)
	if err != nil {
		return nil, err
	}
	att.Addr = netip.PrefixFrom(addr, c.Subnet.Bits())
	if c.NAT {
		if err := ipam.locked(func() error { return ensureNAT(c) }); err != nil {
			return nil, err
		}
	}
	if ipam6 != nil {
		a6, err := ipam6.Allocate(id)
		if err != nil {
			return nil, err
		}
		att.Addr6, att.Gateway6 = netip.PrefixFrom(a6, c.Subnet6.Bits()), ipam6.Gateway()
	}
	return att, nil
}

func configureInside(h *netlink.Handle, peer string, att *Attachment) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return err
	}
	eth, err := h.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := h.LinkSetName(eth, "eth0"); err != nil {
		return err
	}
	for _, a := range []netip.Prefix{att.Addr, att.Addr6} {
		if !a.IsValid() {
			continue
		}
		// IPv6 duplicate address detection would hold the address back for a second.
		if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(a), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("adding %s: %w", a, err)
		}
	}
	if err := h.LinkSetUp(eth); err != nil {
		return err
	}
	for _, gw := range []netip.Addr{att.Gateway, att.Gateway6} {
		if !gw.IsValid() || (gw.Is6() && !att.Addr6.IsValid()) {
			continue
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return nil
}

// Detach removes the container's veth (the kernel removes both ends) and
// releases its addresses. It works after the container and its shim are
// gone, and doing it twice is fine. The bridge stays.
func Detach(c Config, id string) error {
	deleteVeth, err := Release(c, id)
	return errors.Join(deleteVeth(), err)
}

// Release releases the container's addresses now and returns the deletion
// of its veth, for the caller to run when it suits it. Deleting a veth
// waits for RCU grace periods (hack/README.md has what they cost), which a container's Delete need
// not wait for: its processes are gone, so nothing uses the veth, and if
// the deletion never runs the veth still goes with the container's network
// namespace. The veth is looked up now and deleted by its index, so a
// later container of the same id (hence veth name) is never the one
// deleted. Releasing first reuses no address early: addresses are handed
// out round-robin.
func Release(c Config, id string) (deleteVeth func() error, err error) {
	deleteVeth = func() error { return nil }
	if l, err := netlink.LinkByName(HostVethName(id)); err == nil {
		deleteVeth = func() error {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("deleting %s: %w", HostVethName(id), err)
			}
			return nil
		}
	}
	var errs []error
	for _, fam := range []struct {
		family int
		subnet netip.Prefix
	}{{4, c.Subnet}, {6, c.Subnet6}} {
		if !fam.subnet.IsValid() {
			continue
		}
		ipam, err := NewIPAM(c.ipamDir(fam.family), fam.subnet)
		if err == nil {
			err = ipam.Release(id)
		}
		if err == nil && fam.family == 4 && c.NAT {
			// The last container of the subnet takes the NAT rule along.
			err = ipam.locked(func() error {
				if all, err := ipam.readAll(); err != nil || len(all) > 0 {
					return err
				}
				return removeNAT(c)
			})
		}
		errs = append(errs, err)
	}
	return deleteVeth, errors.Join(errs...)
}

// ensureBridge finds or creates the bridge with the gateway addresses. A
// bridge that exists with other addresses is refused rather than changed.
func ensureBridge(c Config, ipam, ipam6 *IPAM) (netlink.Link, error) {
	want := []netip.Prefix{netip.PrefixFrom(ipam.Gateway(), c.Subnet.Bits())}
	if ipam6 != nil {
		want = append(want, netip.PrefixFrom(ipam6.Gateway(), c.Subnet6.Bits()))
	}
	br, err := netlink.LinkByName(c.Bridge)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return nil, err
		}
		if err := checkNoOverlap(c); err != nil {
			return nil, err
		}
		err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: c.Bridge}})
		if err != nil && !errors.Is(err, unix.EEXIST) { // another shim may win the race
			return nil, fmt.Errorf("creating bridge %s: %w", c.Bridge, err)
		}
		if br, err = netlink.LinkByName(c.Bridge); err != nil {
			return nil, err
		}
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("%s exists and is a %s, not a bridge: %w", c.Bridge, br.Type(), errdefs.ErrFailedPrecondition)
	}
	have, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(br, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, err
	}
	for _, w := range want {
		found, other := false, ""
		for _, a := range have {
			p := prefixOf(a.IPNet)
			if p == w {
				found = true
			} else if p.Addr().Is4() == w.Addr().Is4() && !p.Addr().IsLinkLocalUnicast() {
				other = p.String()
			}
		}
		if found {
			continue
		}
		if other != "" {
			return nil, fmt.Errorf("bridge %s exists with address %s, not %s; pick another bridge or subnet: %w", c.Bridge, other, w, errdefs.ErrFailedPrecondition)
		}
		if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: ipNet(w), Flags: unix.IFA_F_NODAD}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("adding %s to bridge %s: %w", w, c.Bridge, err)
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, err
	}
	return br, nil
}

// checkNoOverlap refuses a subnet the host already routes elsewhere, so the
// bridge never steals traffic from one of the machine's own networks.
func checkNoOverlap(c Config) error {
	routes, err := dump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst := prefixOf(r.Dst)
		if dst.Bits() == 0 {
			continue // default routes overlap everything by definition
		}
		for _, s := range []netip.Prefix{c.Subnet, c.Subnet6} {
			if s.IsValid() && dst.Addr().Is4() == s.Addr().Is4() && dst.Overlaps(s) {
				name := fmt.Sprint(r.LinkIndex)
				if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
					name = l.Attrs().Name
				}
				return fmt.Errorf("subnet %s overlaps the host's route to %s on %s; choose another subnet: %w", s, dst, name, errdefs.ErrFailedPrecondition)
			}
		}
	}
	return nil
}

// dump retries a netlink dump that the kernel interrupted because the
// table changed meanwhile (other shims add veths and addresses all the
// time); an interrupted dump may be incomplete, so it is never used.
func dump[T any](list func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		out, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == 20 {
			return out, err
		}
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

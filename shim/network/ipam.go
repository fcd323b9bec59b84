package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// IPAM hands out addresses of one subnet. Every allocation is a file named
// after the address and holding the owner's id, created with O_EXCL under an
// exclusive flock, so two shims (or a restarted one) can never hand out the
// same address, and an allocation outlives the shim that made it until it is
// released.
type IPAM struct {
	dir    string
	subnet netip.Prefix
}

// NewIPAM keeps its allocations for subnet in dir.
func NewIPAM(dir string, subnet netip.Prefix) (*IPAM, error) {
	subnet = subnet.Masked()
	if subnet.Bits() > subnet.Addr().BitLen()-2 {
		return nil, fmt.Errorf("subnet %s has no room for a gateway and a container: %w", subnet, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &IPAM{dir: dir, subnet: subnet}, nil
}

// Gateway is the subnet's first address; it belongs to the bridge.
func (p *IPAM) Gateway() netip.Addr { return p.subnet.Addr().Next() }

func (p *IPAM) locked(fn func() error) error {
	f, err := os.OpenFile(filepath.Join(p.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return fn()
}

// Allocate gives id an address, or returns the one id already has. Addresses
// are handed out round-robin after the last one given, so a just-released
// address is not reused at once by a different container.
func (p *IPAM) Allocate(id string) (addr netip.Addr, err error) {
	return p.AllocatePreferring(id, netip.Addr{})
}

// AllocatePreferring is Allocate, giving id the address prefer when it is
// one of the subnet's and free (a restored container's old address).
func (p *IPAM) AllocatePreferring(id string, prefer netip.Addr) (addr netip.Addr, err error) {
	if id == "" || strings.ContainsAny(id, "\n\x00") {
		return addr, fmt.Errorf("invalid owner id %q: %w", id, errdefs.ErrInvalidArgument)
	}
	err = p.locked(func() error {
		owned, err := p.owned(id)
		if err != nil || len(owned) > 0 {
			if len(owned) > 0 {
				addr = owned[0]
			}
			return err
		}
		if ok, err := p.take(prefer, id); ok || err != nil {
			addr = prefer
			return err
		}
		start := p.Gateway()
		if b, err := os.ReadFile(filepath.Join(p.dir, "last")); err == nil {
			if last, err := netip.ParseAddr(strings.TrimSpace(string(b))); err == nil && p.subnet.Contains(last) {
				start = last
			}
		}
		for a := p.next(start); a != start; a = p.next(a) {
			if a == p.Gateway() {
				continue
			}
			f, err := os.OpenFile(filepath.Join(p.dir, a.String()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, os.ErrExist) {
				continue
			}
			if err != nil {
				return err
			}
			_, err = f.WriteString(id)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(f.Name())
				return err
			}
			addr = a
			return writeFileAtomic(filepath.Join(p.dir, "last"), []byte(a.String()))
		}
		return fmt.Errorf("subnet %s is exhausted: every address is allocated: %w", p.subnet, errdefs.ErrResourceExhausted)
	})
	return addr, err
}

// take gives id address a when it is usable and free, under the lock.
func (p *IPAM) take(a netip.Addr, id string) (bool, error) {
	if !a.IsValid() || !p.subnet.Contains(a) || a == p.Gateway() || p.next(a.Prev()) != a {
		return false, nil
	}
	f, err := os.OpenFile(filepath.Join(p.dir, a.String()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_, err = f.WriteString(id)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return false, err
	}
	return true, nil
}

// next steps through the usable addresses: not the network address and, for
// IPv4, not the broadcast address.
func (p *IPAM) next(a netip.Addr) netip.Addr {
	for {
		a = a.Next()
		if !a.IsValid() || !p.subnet.Contains(a) {
			a = p.subnet.Addr()
			continue
		}
		if a == p.subnet.Addr() || (a.Is4() && !p.subnet.Contains(a.Next())) {
			continue
		}
		return a
	}
}

// Release frees every address owned by id. Releasing nothing is not an error.
func (p *IPAM) Release(id string) error {
	return p.locked(func() error {
		owned, err := p.owned(id)
		if err != nil {
			return err
		}
		for _, a := range owned {
			if err := os.Remove(filepath.Join(p.dir, a.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	})
}

// Allocations maps every allocated address to its owner.
func (p *IPAM) Allocations() (out map[netip.Addr]string, err error) {
	err = p.locked(func() error {
		out, err = p.readAll()
		return err
	})
	return out, err
}

func (p *IPAM) readAll() (map[netip.Addr]string, error) {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, err
	}
	out := map[netip.Addr]string{}
	for _, e := range entries {
		a, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue // "lock", "last"
		}
		b, err := os.ReadFile(filepath.Join(p.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out[a] = string(b)
	}
	return out, nil
}

func (p *IPAM) owned(id string) ([]netip.Addr, error) {
	all, err := p.readAll()
	var out []netip.Addr
	for a, owner := range all {
		if owner == id {
			out = append(out, a)
		}
	}
	return out, err
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

package container

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// capNames maps capability names to numbers (linux/capability.h).
var capNames = map[string]int{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

// CapabilityNames lists the capabilities the package knows, in number
// order.
func CapabilityNames() []string {
	names := make([]string, len(capNames))
	for n, c := range capNames {
		names[c] = n
	}
	return names
}

// capSets is a process' capabilities as bit masks.
type capSets struct {
	bounding, effective, permitted, inheritable, ambient uint64
	lastCap                                              int
}

func capMask(names []string) (uint64, error) {
	var m uint64
	for _, n := range names {
		c, ok := capNames[strings.ToUpper(n)]
		if !ok {
			return 0, fmt.Errorf("unknown capability %q", n)
		}
		m |= 1 << uint(c)
	}
	return m, nil
}

// parseCaps resolves the spec's capability names; nil means "leave the
// capabilities alone" (a spec without a capabilities object).
func parseCaps(c *specs.LinuxCapabilities) (*capSets, error) {
	if c == nil {
		return nil, nil
	}
	var s capSets
	var err error
	for _, x := range []struct {
		dst   *uint64
		names []string
	}{{&s.bounding, c.Bounding}, {&s.effective, c.Effective}, {&s.permitted, c.Permitted},
		{&s.inheritable, c.Inheritable}, {&s.ambient, c.Ambient}} {
		if *x.dst, err = capMask(x.names); err != nil {
			return nil, err
		}
	}
	s.lastCap = 40
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			s.lastCap = n
		}
	}
	return &s, nil
}

// dropBounding removes every capability not in the bounding set. It runs
// while still privileged (needs CAP_SETPCAP).
func (s *capSets) dropBounding() error {
	for c := 0; c <= s.lastCap; c++ {
		if s.bounding&(1<<uint(c)) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// apply sets the thread's effective, permitted and inheritable sets, then
// raises the ambient ones. It runs after the uid change (with
// PR_SET_KEEPCAPS set so that permitted survives it) on the thread that
// will execve.
func (s *capSets) apply() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for i := 0; i < 2; i++ {
		data[i].Effective = uint32(s.effective >> (32 * i))
		data[i].Permitted = uint32(s.permitted >> (32 * i))
		data[i].Inheritable = uint32(s.inheritable >> (32 * i))
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for c := 0; c <= s.lastCap; c++ {
		if s.ambient&(1<<uint(c)) == 0 {
			continue
		}
		// Ambient capabilities must also be permitted and inheritable;
		// the kernel refuses (EPERM) others, as the spec allows.
		unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0)
	}
	return nil
}

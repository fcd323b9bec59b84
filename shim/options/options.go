// Package options reads the shim's runtime options from what containerd
// passes with a task: tupper's own Options message, or CRI's generic
// runtimeoptions.v1.Options whose ConfigBody (or ConfigPath) holds the TOML
// of the runtime handler's options table. runc's Options message, which
// ctr sends for a user-namespaced task whatever the runtime, is accepted
// for the fields that mean something here.
package options

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"unicode"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/protobuf/reflect/protoreflect"

	optionspb "github.com/tupper/tupper/proto/options"
	"github.com/tupper/tupper/shim/network"
)

// FromAny returns the options in a task request; nil means all defaults.
func FromAny(a typeurl.Any) (*optionspb.Options, error) {
	if a == nil || a.GetTypeUrl() == "" {
		return &optionspb.Options{}, nil
	}
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return nil, fmt.Errorf("runtime options of type %s: %v: %w", a.GetTypeUrl(), err, errdefs.ErrInvalidArgument)
	}
	switch o := v.(type) {
	case *optionspb.Options:
		return o, Validate(o)
	case *runtimeoptions.Options:
		body := o.ConfigBody
		if o.ConfigPath != "" {
			if body, err = os.ReadFile(o.ConfigPath); err != nil {
				return nil, fmt.Errorf("runtime options ConfigPath: %w", err)
			}
		}
		return FromTOML(body)
	case *runcoptions.Options:
		return fromRunc(o)
	}
	return nil, fmt.Errorf("runtime options of type %s are not tupper's (want %s or CRI's runtimeoptions.v1.Options): %w",
		a.GetTypeUrl(), (&optionspb.Options{}).ProtoReflect().Descriptor().FullName(), errdefs.ErrInvalidArgument)
}

// IsOptions reports whether a is one of the options messages FromAny
// reads (containerd passes a task's options among other extensions to the
// shim's start).
func IsOptions(a typeurl.Any) bool {
	if a == nil {
		return false
	}
	for _, m := range []any{&optionspb.Options{}, &runtimeoptions.Options{}, &runcoptions.Options{}} {
		if typeurl.Is(a, m) {
			return true
		}
	}
	return false
}

// IOOwner returns the owner runc's options ask for the process' stdio
// pipes (IoUid/IoGid: containerd's client sets them for a user-namespaced
// task, so that its root, a mapped id, may reopen /dev/stdout and the
// like); ok is false when the options set none.
func IOOwner(a typeurl.Any) (uid, gid int, ok bool) {
	if a == nil || !typeurl.Is(a, &runcoptions.Options{}) {
		return 0, 0, false
	}
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return 0, 0, false
	}
	o := v.(*runcoptions.Options)
	if o.IoUid == 0 && o.IoGid == 0 {
		return 0, 0, false
	}
	return int(o.IoUid), int(o.IoGid), true
}

// fromRunc takes runc's options: ctr's client puts IoUid/IoGid there
// for a user-namespaced task (WithUIDOwner/WithGIDOwner), which fails for
// any other options type, so `ctr run --uidmap` sends this message.
// IoUid/IoGid own the stdio pipes (IOOwner). Every container gets a
// session keyring of its own whatever NoNewKeyring says (the caller's
// keys must not reach it). ShimCgroup is applied by the manager.
// CriuImagePath (ctr's and the client's WithRestoreImagePath) is
// containerd's to read: it passes that directory to Create as the
// checkpoint to restore. What would change runc's behaviour and has no
// meaning here is refused.
func fromRunc(o *runcoptions.Options) (*optionspb.Options, error) {
	for name, set := range map[string]bool{
		"NoPivotRoot": o.NoPivotRoot, "BinaryName": o.BinaryName != "", "Root": o.Root != "",
		"CriuWorkPath": o.CriuWorkPath != "",
	} {
		if set {
			return nil, fmt.Errorf("runc runtime option %s is not supported by tupper: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	return &optionspb.Options{SystemdCgroup: o.SystemdCgroup, ShimCgroup: o.ShimCgroup}, nil
}

// keyName is the TOML key of a field: its Go name, e.g. SystemdCgroup.
func keyName(f protoreflect.FieldDescriptor) string {
	j := []rune(f.JSONName())
	j[0] = unicode.ToUpper(j[0])
	return string(j)
}

// criKeys are CRI's own keys; they stay in the TOML body CRI passes on.
var criKeys = map[string]bool{"TypeUrl": true, "ConfigPath": true}

// FromTOML reads a runtime handler's options table. Keys are the CamelCase
// field names of the Options message; any other key is an error naming it.
func FromTOML(body []byte) (*optionspb.Options, error) {
	o := &optionspb.Options{}
	if len(bytes.TrimSpace(body)) == 0 {
		return o, nil
	}
	var table map[string]any
	if err := toml.Unmarshal(body, &table); err != nil {
		return nil, fmt.Errorf("runtime options TOML: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	fields := o.ProtoReflect().Descriptor().Fields()
	byKey := map[string]protoreflect.FieldDescriptor{}
	for i := 0; i < fields.Len(); i++ {
		byKey[keyName(fields.Get(i))] = fields.Get(i)
	}
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if criKeys[k] {
			continue
		}
		f, ok := byKey[k]
		if !ok {
			return nil, fmt.Errorf("unknown runtime option %q (known: %s): %w", k, strings.Join(knownKeys(byKey), ", "), errdefs.ErrInvalidArgument)
		}
		var val protoreflect.Value
		switch f.Kind() {
		case protoreflect.StringKind:
			s, ok := table[k].(string)
			if !ok {
				return nil, fmt.Errorf("runtime option %s must be a string, not %T: %w", k, table[k], errdefs.ErrInvalidArgument)
			}
			val = protoreflect.ValueOfString(s)
		case protoreflect.BoolKind:
			b, ok := table[k].(bool)
			if !ok {
				return nil, fmt.Errorf("runtime option %s must be true or false, not %T: %w", k, table[k], errdefs.ErrInvalidArgument)
			}
			val = protoreflect.ValueOfBool(b)
		default:
			return nil, fmt.Errorf("runtime option %s has unsupported kind %s", k, f.Kind())
		}
		o.ProtoReflect().Set(f, val)
	}
	return o, Validate(o)
}

func knownKeys(m map[string]protoreflect.FieldDescriptor) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Validate checks the values, naming the option at fault.
func Validate(o *optionspb.Options) error {
	_, err := Network(o)
	return err
}

// Network is the network configuration the options ask for; annotations
// of a container may refine it further.
func Network(o *optionspb.Options) (network.Config, error) {
	c := network.DefaultConfig()
	if o.NetworkMode != "" {
		c.Mode = o.NetworkMode
	}
	if o.Bridge != "" {
		c.Bridge = o.Bridge
	}
	if o.NetworkStateDir != "" {
		c.StateDir = o.NetworkStateDir
	}
	c.NAT, c.NATInterface = o.Nat, o.NatInterface
	for name, src := range map[string]struct {
		s   string
		dst *netip.Prefix
	}{"Subnet": {o.Subnet, &c.Subnet}, "Subnet6": {o.Subnet6, &c.Subnet6}} {
		if src.s == "" {
			continue
		}
		p, err := netip.ParsePrefix(src.s)
		if err != nil {
			return c, fmt.Errorf("runtime option %s=%q is not a subnet: %w", name, src.s, errdefs.ErrInvalidArgument)
		}
		*src.dst = p.Masked()
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("runtime options: %w", err)
	}
	return c, nil
}

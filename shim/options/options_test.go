package options

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"

	optionspb "github.com/tupper/tupper/proto/options"
)

func TestTypedOptions(t *testing.T) {
	a, err := typeurl.MarshalAny(&optionspb.Options{Bridge: "br7", Subnet: "10.214.0.0/24", SystemdCgroup: true})
	if err != nil {
		t.Fatal(err)
	}
	o, err := FromAny(a)
	if err != nil || o.Bridge != "br7" || !o.SystemdCgroup {
		t.Fatalf("typed options: %+v, %v", o, err)
	}
	c, err := Network(o)
	if err != nil || c.Bridge != "br7" || c.Subnet.String() != "10.214.0.0/24" {
		t.Fatalf("network config: %+v, %v", c, err)
	}
	if o, err := FromAny(nil); err != nil || o.Bridge != "" {
		t.Fatalf("no options: %+v, %v", o, err)
	}
}

// What CRI sends for a runtime handler with an options table.
func TestCRIConfigBody(t *testing.T) {
	body := []byte("TypeUrl = \"\"\nNetworkMode = \"none\"\nSystemdCgroup = true\nLsmOptional = true\nSubnet6 = \"fd42::/64\"\n")
	a, _ := typeurl.MarshalAny(&runtimeoptions.Options{ConfigBody: body})
	o, err := FromAny(a)
	if err != nil {
		t.Fatal(err)
	}
	if o.NetworkMode != "none" || !o.SystemdCgroup || !o.LsmOptional || o.Subnet6 != "fd42::/64" {
		t.Fatalf("ConfigBody not read: %+v", o)
	}
	path := filepath.Join(t.TempDir(), "tupper.toml")
	os.WriteFile(path, []byte("Bridge = \"tp9\"\n"), 0o644)
	a, _ = typeurl.MarshalAny(&runtimeoptions.Options{ConfigPath: path})
	if o, err := FromAny(a); err != nil || o.Bridge != "tp9" {
		t.Fatalf("ConfigPath: %+v, %v", o, err)
	}
}

// What ctr sends for a user-namespaced task: runc's message with the
// stdio owner.
func TestRuncOptions(t *testing.T) {
	a, _ := typeurl.MarshalAny(&runcoptions.Options{IoUid: 100000, IoGid: 100000, SystemdCgroup: true})
	if o, err := FromAny(a); err != nil || !o.SystemdCgroup {
		t.Fatalf("runc options: %+v, %v", o, err)
	}
	a, _ = typeurl.MarshalAny(&runcoptions.Options{BinaryName: "crun"})
	if _, err := FromAny(a); err == nil || !strings.Contains(err.Error(), "BinaryName") {
		t.Fatalf("runc BinaryName accepted: %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	for _, tc := range []struct{ body, msg string }{
		{"Brigde = \"x\"", `"Brigde"`},
		{"SystemdCgroup = \"yes\"", "SystemdCgroup"},
		{"Bridge = 7", "Bridge"},
		{"Subnet = \"10.0.0.0/99\"", "Subnet"},
		{"NetworkMode = \"overlay\"", "overlay"},
		{"this is not toml", "TOML"},
	} {
		_, err := FromTOML([]byte(tc.body))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: got %v, want an error naming %s", tc.body, err, tc.msg)
		}
	}
	a, _ := typeurl.MarshalAny(&runtimeoptions.Options{ConfigPath: "/does/not/exist.toml"})
	if _, err := FromAny(a); err == nil || !strings.Contains(err.Error(), "ConfigPath") {
		t.Errorf("missing ConfigPath: %v", err)
	}
}

func TestIOOwner(t *testing.T) {
	a, err := typeurl.MarshalAny(&runcoptions.Options{IoUid: 100000, IoGid: 100001})
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid, ok := IOOwner(a); !ok || uid != 100000 || gid != 100001 {
		t.Errorf("IOOwner = %d, %d, %v", uid, gid, ok)
	}
	b, _ := typeurl.MarshalAny(&optionspb.Options{Bridge: "x"})
	if _, _, ok := IOOwner(b); ok {
		t.Error("tupper's options have no I/O owner")
	}
	if !IsOptions(a) || !IsOptions(b) || IsOptions(nil) {
		t.Error("IsOptions")
	}
	if o, err := FromAny(a); err != nil || o.ShimCgroup != "" {
		t.Errorf("runc options with IoUid: %v, %v", o, err)
	}
}

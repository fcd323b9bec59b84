package harness

import (
	"reflect"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// TestConfigTOML parses what Config writes and checks what containerd
// will read from it.
func TestConfigTOML(t *testing.T) {
	for _, c := range []Config{
		{Root: "/r", State: "/s", Address: "/a.sock", TupperSocket: "/t.sock", TupperRoot: "/t", Unpack: []string{Tupper, Overlayfs}},
		{Root: "/r", State: "/s", Address: "/a.sock", CRI: true, LogLevel: "debug", Unpack: []string{Btrfs}},
		{Root: "/r", State: "/s", Address: "/a.sock"},
	} {
		var got struct {
			Version         int
			Root, State     string
			DisabledPlugins []string `toml:"disabled_plugins"`
			GRPC            struct{ Address string }
			TTRPC           struct{ Address string }
			Debug           struct{ Level string }
			ProxyPlugins    map[string]struct {
				Type, Address string
				Exports       map[string]string
			} `toml:"proxy_plugins"`
			Plugins map[string]struct {
				UnpackConfig []struct {
					Snapshotter string
					Optional    bool
				} `toml:"unpack_config"`
			}
		}
		if err := toml.Unmarshal([]byte(c.TOML()), &got); err != nil {
			t.Fatalf("%v\n%s", err, c.TOML())
		}
		if got.Version != 3 || got.Root != c.Root || got.State != c.State || got.GRPC.Address != c.Address ||
			got.TTRPC.Address != c.Address+".ttrpc" || got.Debug.Level != c.LogLevel {
			t.Errorf("%+v: read back %+v", c, got)
		}
		if (len(got.DisabledPlugins) == 0) != c.CRI {
			t.Errorf("CRI %v, disabled plugins %v", c.CRI, got.DisabledPlugins)
		}
		proxy, ok := got.ProxyPlugins[Tupper]
		if ok != (c.TupperSocket != "") || (ok && (proxy.Type != "snapshot" || proxy.Address != c.TupperSocket || proxy.Exports["root"] != c.TupperRoot)) {
			t.Errorf("tupper socket %q: proxy plugins %+v", c.TupperSocket, got.ProxyPlugins)
		}
		var unpack []string
		for i, u := range got.Plugins["io.containerd.transfer.v1.local"].UnpackConfig {
			unpack = append(unpack, u.Snapshotter)
			if u.Optional != (i > 0) {
				t.Errorf("unpack %s: optional %v", u.Snapshotter, u.Optional)
			}
		}
		if !reflect.DeepEqual(unpack, c.Unpack) {
			t.Errorf("unpack into %v, want %v", unpack, c.Unpack)
		}
	}
}

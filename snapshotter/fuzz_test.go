package snapshotter

import (
	"strings"
	"testing"
)

// FuzzKey: a key is either refused, or it has no "." or ".." element and no
// control character; never a panic.
func FuzzKey(f *testing.F) {
	for _, s := range []string{"default/1/sha256:abc", "/tmp/x/work/preparing", "..", "a/../b", "a\x00b", "", strings.Repeat("k", 5000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if validateKey("key", key) != nil {
			return
		}
		for _, e := range strings.Split(key, "/") {
			if e == "." || e == ".." {
				t.Fatalf("accepted %q with a %q element", key, e)
			}
		}
		if strings.ContainsAny(key, "\x00\n\r") || key == "" || len(key) > maxKeyLen {
			t.Fatalf("accepted %q", key)
		}
	})
}

// FuzzMaxSize: a max-size label is refused or gives a positive size.
func FuzzMaxSize(f *testing.F) {
	for _, s := range []string{"10485760", "512MiB", "1g", "0", "-1", "ten", "1.5GB", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, err := parseMaxSize(map[string]string{LabelMaxSize: v})
		if err == nil && n == 0 {
			t.Fatalf("%q accepted as size 0", v)
		}
	})
}

package container

import (
	"testing"
)

// BenchmarkRun measures create + start + wait of `true` in a container
// with ctr's default namespaces and mounts (no containerd, no shim).
func BenchmarkRun(b *testing.B) {
	needRoot(b)
	bundle := newBundle(b)
	spec := testSpec("true")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := Create(Options{ID: "bench", Bundle: bundle, Spec: spec})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		if st, _, err := c.Init().Wait(); err != nil || st != 0 {
			b.Fatalf("status %d %v", st, err)
		}
	}
}

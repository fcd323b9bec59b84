package nsenter

import (
	"bytes"
	"os"
	"testing"

	"github.com/tupper/tupper/shim/nsenter/header"
)

// TestHeaderIsCurrent fails when protocol.h no longer matches the Go names
// it is generated from: run `go generate ./shim/nsenter/...`.
func TestHeaderIsCurrent(t *testing.T) {
	got, err := os.ReadFile("protocol.h")
	if err != nil {
		t.Fatal(err)
	}
	if want := header.Generate(); !bytes.Equal(got, want) {
		t.Fatalf("protocol.h is stale; run `go generate ./shim/nsenter/...`. want:\n%s\ngot:\n%s", want, got)
	}
}

//go:build ignore

// gen writes shim/nsenter/protocol.h (see Generate).
package main

import (
	"log"
	"os"

	"github.com/tupper/tupper/shim/nsenter/header"
)

func main() {
	if err := os.WriteFile("../protocol.h", header.Generate(), 0o644); err != nil {
		log.Fatal(err)
	}
}

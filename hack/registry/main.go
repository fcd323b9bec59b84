// Command registry serves an in-memory OCI registry on a loopback address,
// for tests that must pull (CRI's PullImage has no local shortcut). Images
// are pushed into it with `ctr images push --plain-http`. It refuses any
// address that is not loopback.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5000", "loopback host:port to listen on")
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		log.Fatal(err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "registry: %s is not a loopback address\n", host)
		os.Exit(2)
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("registry: serving on %s", l.Addr())
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(os.Stderr, "registry: ", log.LstdFlags))), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(l))
}

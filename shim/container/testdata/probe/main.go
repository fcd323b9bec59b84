// probe is run inside test containers, where busybox lacks what the
// hostile-input tests try:
//
//	probe keyring DESC   read the user key DESC through the session keyring
//
// It prints one line: what it got, or "denied: <why>".
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "keyring" {
		fmt.Println(keyring(os.Args[2]))
		return
	}
	fmt.Fprintln(os.Stderr, "usage: probe keyring DESC")
	os.Exit(2)
}

func keyring(desc string) string {
	id, err := unix.KeyctlSearch(unix.KEY_SPEC_SESSION_KEYRING, "user", desc, 0)
	if err != nil {
		return "denied: " + err.Error()
	}
	buf := make([]byte, 256)
	n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
	if err != nil {
		return "denied: " + err.Error()
	}
	return "read: " + string(buf[:min(n, len(buf))])
}
